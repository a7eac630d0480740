"""``pressured doctor``: the real command on this host, plus the rendering and result rules.

The subprocess tests run ``python3 -m pressured doctor`` exactly as a user would and check the
facts against what this host really has; where a fact is host-specific (privilege, layout,
kernel version) the expectation is keyed on the environment, or the test skips saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pressured.cli.doctor import render_table
from pressured.doctor import (
    CheckResult,
    DoctorReport,
    Status,
    TriggerProbe,
    TriggerWindows,
    check_kernel,
    check_other_killers,
    check_trigger_readers,
    kernel_version,
)
from pressured.kernel import psi
from pressured.kernel.cgroupfs import LayoutMode, discover_layout

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 30.0
EXPECTED_CHECKS = (
    "kernel",
    "psi_system",
    "psi_cgroup",
    "psi_triggers",
    "trigger_readers",
    "pidfd",
    "process_mrelease",
    "cgroup_layout",
    "cgroup_controllers",
    "cgroup_kill",
    "swap",
    "kill_rights",
    "capabilities",
    "mlockall",
    "other_killers",
)

HOST_SKIP_REASON = (
    None
    if os.geteuid() == 0 and os.path.exists("/proc/pressure/memory")
    else "doctor's host expectations are for root on a PSI kernel (the dev and CI hosts)"
)


def run_doctor_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pressured", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=REPO,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def doctor_json() -> dict[str, Any]:
    """``pressured doctor --json`` run once for the module; it must exit 0 here."""
    if HOST_SKIP_REASON:
        pytest.skip(HOST_SKIP_REASON)
    result = run_doctor_cli("--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.fixture(scope="module")
def checks(doctor_json: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in doctor_json["checks"]}


def test_json_says_pressured_can_run(doctor_json: dict[str, Any]) -> None:
    """On this host pressured can run: can_run is true and nothing failed."""
    assert doctor_json["can_run"] is True
    assert doctor_json["summary"]["fail"] == 0


def test_json_lists_every_check_in_order(doctor_json: dict[str, Any]) -> None:
    """Every check appears once, in the documented order."""
    assert tuple(check["name"] for check in doctor_json["checks"]) == EXPECTED_CHECKS


def test_every_non_ok_check_has_a_remedy(doctor_json: dict[str, Any]) -> None:
    """A warning or failure always comes with a one-sentence remedy."""
    for check in doctor_json["checks"]:
        assert (check["status"] == "ok") == (check["remedy"] is None), check


def test_psi_is_available(checks: dict[str, dict[str, Any]]) -> None:
    """System-wide and per-cgroup PSI are both readable."""
    assert checks["psi_system"]["status"] == "ok"
    assert checks["psi_system"]["essential"] is True
    if discover_layout().unified is None:
        pytest.skip("no cgroup2 here, so no per-cgroup PSI to report")
    assert checks["psi_cgroup"]["status"] == "ok"


def test_trigger_windows_match_privilege(doctor_json: dict[str, Any]) -> None:
    """Without CAP_SYS_RESOURCE: 1 s refused with EINVAL, 2 s works, 2 s multiples reported."""
    triggers = doctor_json["triggers"]
    if psi.may_use_fast_windows():
        assert triggers["privileged"] is True
        pytest.skip("this process has CAP_SYS_RESOURCE: the unprivileged windows are not seen")
    assert triggers["privileged"] is False
    assert triggers["step_us"] == 2_000_000
    assert triggers["min_window_us"] == 2_000_000
    assert triggers["probes"] == {"some 150000 1000000": "EINVAL", "some 150000 2000000": "ok"}
    assert "2 s multiples" in triggers["summary"]


def test_unprivileged_triggers_warn_about_readers(
    doctor_json: dict[str, Any], checks: dict[str, dict[str, Any]]
) -> None:
    """Unprivileged, doctor warns that pressure-file readers starve triggers."""
    if doctor_json["triggers"]["privileged"]:
        pytest.skip("privileged triggers are not starved by readers")
    readers = checks["trigger_readers"]
    assert readers["status"] == "warn"
    assert "monitoring agents" in readers["detail"]
    assert "CAP_SYS_RESOURCE" in readers["remedy"]


def test_pidfd_works(checks: dict[str, dict[str, Any]]) -> None:
    """pidfd_open and pidfd_send_signal work (essential)."""
    assert checks["pidfd"]["status"] == "ok"
    assert checks["pidfd"]["essential"] is True


def test_process_mrelease_reaped_or_gone(checks: dict[str, dict[str, Any]]) -> None:
    """The throw-away child was killed and mrelease answered reaped (or gone)."""
    version = kernel_version()
    if version is not None and version < (5, 15):
        pytest.skip("process_mrelease needs Linux 5.15+")
    mrelease = checks["process_mrelease"]
    assert mrelease["status"] == "ok"
    assert mrelease["facts"]["result"] in ("reaped", "gone")
    assert mrelease["facts"]["child_exited"] is True


def test_cgroup_layout_matches_host(checks: dict[str, dict[str, Any]]) -> None:
    """The layout and both mount points are the ones /proc/self/mountinfo shows."""
    layout = discover_layout()
    facts = checks["cgroup_layout"]["facts"]
    assert facts["mode"] == str(layout.mode)
    assert facts["v2_mount"] == (layout.unified.mount_point if layout.unified else None)
    memory = layout.memory_v1
    assert facts["v1_memory_mount"] == (memory.mount_point if memory else None)
    if layout.mode is LayoutMode.HYBRID:
        assert checks["cgroup_layout"]["status"] == "ok"
        assert "hybrid" in checks["cgroup_layout"]["detail"]


def test_cgroup_kill_present(checks: dict[str, dict[str, Any]]) -> None:
    """cgroup.kill is found in a non-root v2 group (Linux 5.14+ with cgroup2)."""
    version = kernel_version()
    if discover_layout().unified is None or (version is not None and version < (5, 14)):
        pytest.skip("cgroup.kill needs cgroup2 and Linux 5.14+")
    assert checks["cgroup_kill"]["status"] == "ok"
    assert checks["cgroup_kill"]["facts"]["cgroup.kill"] is True


def test_doctor_leaves_no_probe_group_behind(checks: dict[str, dict[str, Any]]) -> None:
    """The probe group doctor may create to look for cgroup.kill is removed again."""
    looked_at = checks["cgroup_kill"]["facts"].get("looked_at", "")
    if "pressured-doctor-" not in looked_at:
        pytest.skip("doctor found an existing group and created no probe group")
    assert not Path(looked_at).exists()


def test_swap_matches_meminfo(checks: dict[str, dict[str, Any]]) -> None:
    """Swap totals are those of /proc/meminfo."""
    total_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("SwapTotal:")
    )
    assert checks["swap"]["facts"]["total_bytes"] == total_kib * 1024


def test_capabilities_reported(checks: dict[str, dict[str, Any]]) -> None:
    """The four capabilities are reported as this process holds them."""
    facts = checks["capabilities"]["facts"]
    assert set(facts) == {"CAP_KILL", "CAP_SYS_RESOURCE", "CAP_SYS_NICE", "CAP_IPC_LOCK"}
    assert facts["CAP_SYS_RESOURCE"] is psi.may_use_fast_windows()
    assert checks["kill_rights"]["status"] == "ok"


def test_mlockall_tried_in_a_child(checks: dict[str, dict[str, Any]]) -> None:
    """mlockall was answered by the probe child (root with CAP_IPC_LOCK: it works)."""
    mlock = checks["mlockall"]
    assert "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT" in mlock["facts"]
    if checks["capabilities"]["facts"]["CAP_IPC_LOCK"]:
        assert mlock["status"] == "ok"


def test_table_mentions_every_check_and_exits_0() -> None:
    """The plain-text table names each check, the trigger windows and the verdict."""
    if HOST_SKIP_REASON:
        pytest.skip(HOST_SKIP_REASON)
    result = run_doctor_cli()
    assert result.returncode == 0, result.stderr
    for name in EXPECTED_CHECKS:
        assert f"\n{name} " in result.stdout, name
    assert "Trigger windows:" in result.stdout
    assert "pressured can run here" in result.stdout
    assert "\033[" not in result.stdout


# -- pure rules (no host needed, but kept in this module for one place to read) -----------------


def _report(*checks: CheckResult) -> DoctorReport:
    return DoctorReport(checks, None, 0.0)


def test_failed_essential_check_means_cannot_run() -> None:
    """An essential failure makes can_run false; a non-essential warning does not."""
    warn = CheckResult("swap", Status.WARN, "odd", "fix it")
    fail = CheckResult("pidfd", Status.FAIL, "missing", "upgrade", essential=True)
    assert _report(warn).can_run
    assert not _report(warn, fail).can_run


def test_non_ok_result_without_remedy_is_refused() -> None:
    """A warning without a remedy is a programming error caught at construction."""
    with pytest.raises(ValueError, match="no remedy"):
        CheckResult("swap", Status.WARN, "odd")


def test_table_shows_remedy_and_cannot_run_verdict() -> None:
    """A failed essential check's remedy and the 'cannot run' verdict are in the table."""
    fail = CheckResult("pidfd", Status.FAIL, "missing", "Use Linux 5.3+.", essential=True)
    table = render_table(_report(fail), width=80, colour=False)
    assert "fix: Use Linux 5.3+." in table
    assert "cannot run here: pidfd failed" in table


def test_old_kernel_warns_about_mrelease() -> None:
    """A 5.10 kernel is a warning naming process_mrelease, with a remedy."""
    result = check_kernel("5.10.0-26-amd64")
    assert result.status is Status.WARN
    assert "process_mrelease" in result.detail
    assert result.remedy


def test_trigger_readers_ok_when_privileged() -> None:
    """Privileged triggers use the real-time poller, so readers are no concern."""
    windows = TriggerWindows(True, 500_000, 10_000_000, 1, "every window/10", True)
    assert check_trigger_readers(TriggerProbe("/proc/pressure/memory", windows)).ok


# -- other OOM killers (real processes named like them) ------------------------------------------

_NAMED_CHILD = """
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME: the comm
print("ready", flush=True)
time.sleep(60)
"""


@contextmanager
def running(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A child that says ready once it has its name; killed and reaped however the test ends."""
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()


def found(result: CheckResult) -> list[Any]:
    value = result.facts["found"]
    assert isinstance(value, list)
    return value


def no_systemd(_unit: str) -> str | None:
    return None


@pytest.mark.parametrize("name", ["earlyoom", "nohang", "oomd", "systemd-oomd"])
def test_running_oom_killer_is_warned_about_with_a_hand_over(name: str) -> None:
    """A real process whose comm is earlyoom / nohang / oomd / systemd-oomd makes doctor warn,
    naming it and its PID, with how to stop it or run pressured --dry-run beside it."""
    with running([sys.executable, "-c", _NAMED_CHILD, name]) as child:
        result = check_other_killers(unit_state=no_systemd)
    assert result.status is Status.WARN
    assert {"name": name, "pid": child.pid, "matched_by": "comm"} in found(result)
    assert f"{name} (pid {child.pid})" in result.detail
    assert result.remedy is not None
    assert f"systemctl disable --now {name}" in result.remedy
    assert "pressured run --dry-run" in result.remedy


def test_python_script_killer_is_found_by_its_command_line(tmp_path: Path) -> None:
    """nohang is a Python script: an interpreter running a file named nohang is found by its
    command line even though its comm and exe say python."""
    script = tmp_path / "nohang"
    script.write_text('import time\nprint("ready", flush=True)\ntime.sleep(60)\n')
    with running([sys.executable, "-u", str(script), "--config", "/etc/nohang.conf"]) as child:
        result = check_other_killers(unit_state=no_systemd)
    assert {"name": "nohang", "pid": child.pid, "matched_by": "cmdline"} in found(result)


def test_active_systemd_oomd_unit_without_a_process_is_reported() -> None:
    """systemd-oomd's unit reported active (socket-activated, no process yet) still warns."""
    states = {"systemd-oomd.service": "active"}
    result = check_other_killers(unit_state=states.get)
    assert result.status is Status.WARN
    assert {"name": "systemd-oomd", "pid": None, "matched_by": "systemd"} in found(result)
    assert "systemd-oomd (unit active)" in result.detail


def test_doctor_command_warns_about_earlyoom_and_can_still_run() -> None:
    """``pressured doctor --json`` with an earlyoom running: other_killers warns, exit 0."""
    if HOST_SKIP_REASON:
        pytest.skip(HOST_SKIP_REASON)
    with running([sys.executable, "-c", _NAMED_CHILD, "earlyoom"]) as child:
        result = run_doctor_cli("--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    check = next(c for c in report["checks"] if c["name"] == "other_killers")
    assert check["status"] == "warn"
    assert {"name": "earlyoom", "pid": child.pid, "matched_by": "comm"} in check["facts"]["found"]
