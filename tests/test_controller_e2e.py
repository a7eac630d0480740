"""End to end: ``pressured run`` as its own process against real pressure in a scratch cgroup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pressured.kernel import pidfd
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup

pytestmark = [pytest.mark.kernel, pytest.mark.pressure]


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_thrasher_is_killed_and_reaped_bystander_lives(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path, loop: str
) -> None:
    """Under real page-cache thrash the thrasher dies, is reaped, and the bystander lives."""
    config = write_config(tmp_path / "p.toml", scope_config(scratch.path, scratch.memcg_path))
    bystander = scratch.spawn_workload("sleep")
    with Daemon(config, "--loop", loop) as daemon:
        daemon.wait_for("controller.ready", 20)
        thrasher = scratch.spawn_workload("thrash", thrash_file)
        line = daemon.wait_for("victim.killed", 40)
        assert line["pid"] == thrasher.pid
        assert line["result"] == "killed"
        assert line["signal"] == "SIGKILL"
        assert line["mrelease"] in ("reaped", "gone")
        for key in ("event_to_decision_ms", "decision_to_signal_ms", "signal_to_exit_ms"):
            assert isinstance(line[key], float) and line[key] >= 0, key
        assert line["policy"] == "oom_score"
        assert line["rss_before_bytes"] > 0
        assert thrasher.wait(10) == -signal.SIGKILL
        assert _alive(bystander)
        assert daemon.stop() == 0
    assert _alive(bystander)


def test_dry_run_kills_nothing_and_logs_the_would_be_kill(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path
) -> None:
    """--dry-run: the same pressure gives a 'victim.would_kill' line and no signal."""
    config = write_config(tmp_path / "p.toml", scope_config(scratch.path, scratch.memcg_path))
    with Daemon(config, "--dry-run") as daemon:
        daemon.wait_for("controller.ready", 20)
        thrasher = scratch.spawn_workload("thrash", thrash_file)
        line = daemon.wait_for("victim.would_kill", 40)
        assert line["pid"] == thrasher.pid
        assert line["result"] == "dry_run"
        assert line["dry_run"] is True
        assert _alive(thrasher)
        assert not daemon.events("victim.killed")
        assert daemon.stop() == 0
    assert _alive(thrasher)


def test_protected_largest_process_is_never_chosen(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path
) -> None:
    """The thrasher, largest in the group, is protected: the smaller hog dies instead."""
    config = write_config(
        tmp_path / "p.toml",
        scope_config(
            scratch.path, scratch.memcg_path, extra_guard='protect_cmdline = ["workloads thrash"]\n'
        ),
    )
    hog = scratch.spawn_workload("hog", "8")
    with Daemon(config) as daemon:
        daemon.wait_for("controller.ready", 20)
        thrasher = scratch.spawn_workload("thrash", thrash_file)
        line = daemon.wait_for("victim.killed", 40)
        assert line["pid"] == hog.pid
        assert hog.wait(10) == -signal.SIGKILL
        assert _alive(thrasher)
        for decided in daemon.events("policy.decided"):
            assert decided["victim"] != f"pid {thrasher.pid}"
        daemon.stop()
    assert _alive(thrasher)


def test_bad_configuration_exits_2_naming_the_field(tmp_path: Path) -> None:
    """An invalid file stops 'run' before anything is armed, exit 2, the field named."""
    config = write_config(
        tmp_path / "bad.toml",
        "[[scopes]]\n[[scopes.levels]]\nname='x'\nthreshold_ms=5000\nwindow_ms=2000\n",
    )
    done = subprocess.run(
        [sys.executable, "-m", "pressured", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "scopes.0.levels.0" in done.stderr
    assert "threshold_ms" in done.stderr
    assert "trigger.armed" not in done.stdout


def test_unknown_policy_exits_2_before_arming(tmp_path: Path) -> None:
    """A policy that cannot be resolved is a config error found before any trigger is armed."""
    config = write_config(
        tmp_path / "bad.toml", "[[scopes]]\n[[scopes.policies]]\nname = 'no_such_policy'\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pressured", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "scopes.0.policies.0.name" in done.stderr
    assert "trigger.armed" not in done.stdout


def test_sighup_with_bad_file_keeps_running_config_and_good_file_rearms(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """SIGHUP: an invalid file is refused (old config kept); a valid change re-arms."""
    path = write_config(tmp_path / "p.toml", scope_config(scratch.path, scratch.memcg_path))
    good = path.read_text()
    with Daemon(path) as daemon:
        daemon.wait_for("controller.ready", 20)
        path.write_text(good + "\n[bogus]\nkey = 1\n")
        daemon.signal(signal.SIGHUP)
        failed = daemon.wait_for("config.reload_failed", 15)
        assert "bogus" in failed["error"]
        path.write_text(good.replace("threshold_ms = 70", "threshold_ms = 90"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("config.reloaded", 15)
        rearmed = daemon.wait_for(
            "trigger.armed", 5, where=lambda line: line.get("threshold_ms") == 180.0
        )
        assert rearmed["window_ms"] == 2000.0
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert daemon.stop() == 0


def test_default_run_arms_adjusted_system_triggers_and_stops_on_sigterm(tmp_path: Path) -> None:
    """No config: system scope, both default levels armed (adjusted when unprivileged)."""
    env = {"PRESSURED_METRICS__PORT": "0", "PRESSURED_DAEMON__MLOCKALL": "false"}
    # Dry-run: a system-wide daemon in a test must never kill the test runner or a neighbour
    # if earlier tests left stall in the trigger window.
    with Daemon(None, "--dry-run", env=env) as daemon:
        daemon.wait_for("controller.ready", 20)
        armed = daemon.events("trigger.armed")
        assert {line["pressure_level"] for line in armed} == {"some", "full"}
        assert all(line["path"] == "/proc/pressure/memory" for line in armed)
        if not _has_sys_resource():
            assert all(line["window_ms"] == 2000.0 for line in armed)
            assert len(daemon.events("trigger.adjusted")) == 2
        assert daemon.stop() == 0
        assert daemon.events("controller.stopped")


def _has_sys_resource() -> bool:
    from pressured.kernel.caps import CAP_SYS_RESOURCE, has_capability

    return has_capability(CAP_SYS_RESOURCE)


def test_pidfd_of_killed_thrasher_reports_exit() -> None:
    """Sanity for the e2e assertions: a SIGKILLed child's pidfd polls readable."""
    child = subprocess.Popen(["sleep", "30"])
    fd = pidfd.open_pidfd(child.pid)
    try:
        os.kill(child.pid, signal.SIGKILL)
        assert pidfd.wait_exited(fd, 5)
    finally:
        os.close(fd)
        child.wait()
