"""Start-up of ``pressured run`` as a real process: armed before the operations pieces, bad
operations settings still fail before anything is armed, Ctrl-C at any moment of start-up
stops cleanly, and ``--dry-run`` is the first thing the log says."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pressured.policies.registry import BUILTIN_CLASSES, builtin_policies, builtin_policy
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130

# Refused by the preflight, and by the old code after binding: arming must not have happened.
ARMING_EVENTS = ("reaper.started", "trigger.armed", "controller.ready")


def _index(daemon: Daemon, event: str) -> int:
    names = [line.get("event") for line in daemon.lines]
    assert event in names, f"no {event!r} in {names}"
    return names.index(event)


def _assert_clean_exit(daemon: Daemon, code: int) -> None:
    stderr = daemon.stderr_text()
    assert "Traceback" not in stderr, stderr
    assert "KeyboardInterrupt" not in stderr, stderr
    assert all("Traceback" not in raw for raw in daemon.raw), daemon.raw
    assert code == (0 if daemon.events("controller.ready") else EXIT_INTERRUPTED), (
        code,
        daemon.raw[-5:],
        stderr,
    )


@pytest.mark.kernel
def test_dry_run_is_announced_before_any_other_output() -> None:
    """The first log line says dry_run=true, the second says no signal will be sent."""
    # Dry-run, system-wide scope: this test must kill nothing on the machine.
    env = {"PRESSURED_METRICS__PORT": "0", "PRESSURED_DAEMON__MLOCKALL": "false"}
    with Daemon(None, "--dry-run", env=env) as daemon:
        daemon.wait_for("controller.ready", 30)
        assert daemon.stop() == 0
    first, second = json.loads(daemon.raw[0]), json.loads(daemon.raw[1])
    assert first["event"] == "daemon.starting" and first["dry_run"] is True
    assert second["event"] == "daemon.dry_run"
    assert daemon.stderr_text() == ""


@pytest.mark.kernel
def test_triggers_are_armed_before_http_is_served(scratch: ScratchGroup, tmp_path: Path) -> None:
    """Armed first, then the HTTP port served; controller.ready says how long since exec."""
    config = write_config(tmp_path / "p.toml", scope_config(scratch.path, scratch.memcg_path))
    with Daemon(config) as daemon:
        daemon.wait_for("ops.listening", 30)
        ready = daemon.wait_for("controller.ready")
        assert _index(daemon, "trigger.armed") < _index(daemon, "http.listening")
        assert _index(daemon, "controller.ready") < _index(daemon, "ops.listening")
        assert isinstance(ready["since_exec_ms"], float) and ready["since_exec_ms"] > 0
        assert daemon.stop() == 0


@pytest.fixture
def busy_port() -> Iterator[int]:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield int(holder.getsockname()[1])
    finally:
        holder.close()


@pytest.mark.kernel
def test_busy_port_is_a_config_error_before_anything_is_armed(
    scratch: ScratchGroup, tmp_path: Path, busy_port: int
) -> None:
    """Arming first must not turn a busy metrics port into a daemon running without HTTP."""
    text = scope_config(scratch.path, scratch.memcg_path).replace("port = 0", f"port = {busy_port}")
    config = write_config(tmp_path / "p.toml", text)
    with Daemon(config) as daemon:
        assert daemon._running().wait(30) == EXIT_CONFIG
    assert "metrics.port" in daemon.stderr_text()
    assert not [line for line in daemon.lines if line.get("event") in ARMING_EVENTS]


def _refused_journal(scratch: ScratchGroup, tmp_path: Path, journal: str) -> str:
    """Start a daemon whose journal is ``journal``; assert it exits 2 (invalid configuration)
    with nothing armed, and return its stderr."""
    config = write_config(
        tmp_path / "p.toml",
        scope_config(scratch.path, scratch.memcg_path) + f'\n[journal]\npath = "{journal}"\n',
    )
    with Daemon(config) as daemon:
        assert daemon._running().wait(30) == EXIT_CONFIG
    assert not [line for line in daemon.lines if line.get("event") in ARMING_EVENTS]
    return daemon.stderr_text()


@pytest.mark.kernel
def test_unwritable_journal_is_a_config_error_before_anything_is_armed(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """A journal path under a regular file (ENOTDIR even for root) stops start-up, exit 2."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    stderr = _refused_journal(scratch, tmp_path, f"{blocker}/kills.jsonl")
    assert "journal.path" in stderr


@pytest.mark.kernel
def test_journal_in_a_directory_others_can_write_stops_start_up_before_arming(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """The start-up check is the journal's own open: a directory others can write (they could
    swap the file) is refused before anything is armed, not after the daemon runs."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    stderr = _refused_journal(scratch, tmp_path, f"{shared}/kills.jsonl")
    assert "writable by group or others" in stderr
    assert not (shared / "kills.jsonl").exists()


@pytest.mark.kernel
def test_missing_post_kill_hook_program_stops_start_up_before_arming(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """Post-kill hooks start after arming, but their programs are checked before it: a daemon
    that arms and then exits on a typo in a hook path would flap under systemd."""
    missing = tmp_path / "no-such-hook"
    config = write_config(
        tmp_path / "p.toml",
        scope_config(scratch.path, scratch.memcg_path)
        + f'\n[[hooks.post_kill]]\ncommand = ["{missing}"]\n',
    )
    with Daemon(config) as daemon:
        assert daemon._running().wait(30) == EXIT_CONFIG
    assert "hooks.post_kill.0.command" in daemon.stderr_text()
    assert not [line for line in daemon.lines if line.get("event") in ARMING_EVENTS]


SLOW_POLICY = """\
import os
import time

from pressured.policies.base import BasePolicy

# Tells the test that start-up has reached policy loading, then stays there.
open(os.environ["STARTUP_TEST_MARKER"], "w").close()
time.sleep(60)


class SlowPolicy(BasePolicy):
    name = "slow"
"""


def plugin_config(scratch: ScratchGroup, tmp_path: Path, source: str, policy: str) -> Path:
    """A configuration watching ``scratch`` whose one policy is class ``policy`` of a plugin
    file written from ``source`` (private: the loader refuses a file others may write)."""
    plugin = tmp_path / f"{policy.lower()}.py"
    plugin.write_text(source)
    plugin.chmod(0o600)
    policies = f'[[scopes.policies]]\nname = "{plugin}:{policy}"\n'
    return write_config(
        tmp_path / "p.toml", scope_config(scratch.path, scratch.memcg_path, policies=policies)
    )


def wait_for_file(daemon: Daemon, path: Path, what: str, timeout_s: float = 30.0) -> None:
    """Wait until the daemon's plugin made ``path`` (it reached ``what``), failing at once if
    the daemon exits first."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert daemon._running().poll() is None, (daemon.raw[-5:], daemon.stderr_text())
        assert time.monotonic() < deadline, f"the daemon never reached {what}"
        time.sleep(0.01)


@contextlib.contextmanager
def daemon_in_a_plugin_import(scratch: ScratchGroup, tmp_path: Path) -> Iterator[Daemon]:
    """A daemon whose start-up is held in a policy plugin's 60 s import (a step that never
    awaits), yielded once it is there; stopped on the way out."""
    config = plugin_config(scratch, tmp_path, SLOW_POLICY, "SlowPolicy")
    marker = tmp_path / "importing"
    with Daemon(config, env={"STARTUP_TEST_MARKER": str(marker)}) as daemon:
        wait_for_file(daemon, marker, "the plugin's import")
        yield daemon


@pytest.mark.kernel
def test_ctrl_c_while_a_policy_plugin_loads_exits_130_without_traceback(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """Ctrl-C during a start-up step that never awaits (a plugin's import) stops at once."""
    with daemon_in_a_plugin_import(scratch, tmp_path) as daemon:
        daemon.signal(signal.SIGINT)
        code = daemon._running().wait(10)  # well before the plugin's 60 s sleep ends
    _assert_clean_exit(daemon, code)
    assert code == EXIT_INTERRUPTED
    assert not daemon.events("trigger.armed")


def _open_writer_when_read(fifo: Path, deadline: float) -> int:
    """The FIFO's write end, once the daemon has opened the read end (ENXIO until then)."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def signalled_while_reading_the_configuration(
    tmp_path: Path, signum: signal.Signals
) -> tuple[Daemon, int]:
    """A daemon given a FIFO nobody writes as its configuration, sent ``signum`` while it
    waits in read(); the daemon and its exit status."""
    fifo = tmp_path / "pressured.toml"
    os.mkfifo(fifo, 0o600)
    with Daemon(fifo) as daemon:
        writer = _open_writer_when_read(fifo, time.monotonic() + 30)
        try:
            time.sleep(0.1)  # the daemon is now blocked in read(): nothing was written
            daemon.signal(signum)
            code = daemon._running().wait(10)
        finally:
            os.close(writer)
    return daemon, code


@pytest.mark.kernel
def test_ctrl_c_while_reading_the_configuration_exits_130_without_traceback(
    tmp_path: Path,
) -> None:
    """Ctrl-C while the configuration file is still being read (a FIFO nobody writes)."""
    daemon, code = signalled_while_reading_the_configuration(tmp_path, signal.SIGINT)
    _assert_clean_exit(daemon, code)
    assert code == EXIT_INTERRUPTED


@pytest.mark.kernel
@pytest.mark.parametrize("delay_s", [0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.3])
def test_ctrl_c_at_any_moment_of_start_up_stops_cleanly(
    scratch: ScratchGroup, tmp_path: Path, delay_s: float
) -> None:
    """Ctrl-C at fixed delays after the first log line (importing the daemon, arming,
    starting HTTP, or just ready): never a traceback; 130 when it came before
    controller.ready, else the graceful 0; and the process always ends (no thread or armed
    trigger keeps it alive).

    The delays count from ``daemon.starting``, not from exec: a SIGINT while the interpreter
    itself is still importing ``site`` is a fatal error inside CPython, before any of our code
    runs (the configuration-reading moment is covered by the FIFO test above)."""
    config = write_config(tmp_path / "p.toml", scope_config(scratch.path, scratch.memcg_path))
    with Daemon(config) as daemon:
        daemon.wait_for("daemon.starting", 30)
        time.sleep(delay_s)
        daemon.signal(signal.SIGINT)
        code = daemon._running().wait(15)
    _assert_clean_exit(daemon, code)


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(done.stdout.split())


OPERATIONS_MODULES = {
    "prometheus_client",
    "aiofiles",
    "pressured.ops.metrics",
    "pressured.ops.http",
    "pressured.ops.journal",
    "pressured.ops.hooks",
    "pressured.doctor",
}


def test_the_daemon_module_loads_nothing_that_is_not_needed_to_act() -> None:
    """Importing what `pressured run` needs to arm leaves metrics, HTTP, journal, hooks,
    doctor (and their dependencies) for after arming."""
    loaded = _modules_after("import pressured.cli.run, pressured.daemon")
    assert "pressured.controller" in loaded  # the check sees real imports
    assert not (OPERATIONS_MODULES & loaded), sorted(OPERATIONS_MODULES & loaded)


def test_resolving_one_builtin_policy_imports_only_its_module() -> None:
    """A configuration naming oom_score does not import the five other built-in policies."""
    loaded = _modules_after("from pressured.policies.registry import resolve\nresolve('oom_score')")
    assert "pressured.policies.oom_score" in loaded
    others = {m for m in loaded if m.startswith("pressured.policies.")} & {
        "pressured.policies.largest",
        "pressured.policies.adj_tiers",
        "pressured.policies.swap_usage",
        "pressured.policies.cgroup_size_growth",
        "pressured.policies.cgroup_pressure",
    }
    assert not others, sorted(others)


def test_builtin_policy_table_matches_the_builtin_policies() -> None:
    """The name -> module table used at start-up names exactly the built-in classes."""
    classes = builtin_policies()
    assert set(BUILTIN_CLASSES) == set(classes)
    for name, cls in classes.items():
        assert builtin_policy(name) is cls
    assert builtin_policy("no_such_policy") is None


# Runs `pressured run` with an audit hook that counts the files opened until the first trigger
# is armed (the open of a memory.pressure file), prints the count and exits there.
OPENS_UNTIL_ARMED = """\
import json, os, runpy, sys
opened = []
def hook(event, args):
    if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.fsdecode(args[0])
    if path.endswith("memory.pressure"):
        sys.stderr.write("OPENED " + json.dumps(opened) + "\\n")
        os._exit(0)
    opened.append(path)
sys.addaudithook(hook)
sys.argv = ["pressured", "run", "--dry-run", "--cgroup", sys.argv[1]]
runpy.run_module("pressured", run_name="__main__")
"""


@pytest.mark.kernel
def test_start_up_reads_no_package_metadata_before_arming(scratch: ScratchGroup) -> None:
    """pydantic looks for its plugins in every installed distribution's metadata when the
    first model is built: 37 files here before the triggers were armed, each a disk read on a
    thrashing host whose page cache lost them. The daemon reads none."""
    env = {**os.environ, "PRESSURED_METRICS__ENABLED": "false"}
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    done = subprocess.run(
        [sys.executable, "-c", OPENS_UNTIL_ARMED, scratch.path],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = next((x for x in done.stderr.splitlines() if x.startswith("OPENED ")), None)
    assert line is not None, done.stderr[-2000:]
    opened = json.loads(line.removeprefix("OPENED "))
    assert any(path.endswith(".py") or ".pyc" in path for path in opened)  # the probe works
    metadata = [p for p in opened if ".dist-info" in p or ".egg-info" in p]
    assert metadata == []
