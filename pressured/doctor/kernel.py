"""The kernel itself: its version, pidfds, and process_mrelease tried on a throw-away child."""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys

from pressured.doctor.probes import (
    PROBE_TIMEOUT_S,
    errno_name,
    finish_child,
    read_line,
    start_child,
)
from pressured.doctor.result import CheckResult, Status
from pressured.kernel import pidfd

MRELEASE_PROBE_MIB = 8
"""Memory the throw-away mrelease child holds: enough that there is something to release."""

MIN_KERNEL_FOR_MRELEASE = (5, 15)
MIN_KERNEL_FOR_CGROUP_KILL = (5, 14)

# The probes run as `python -I -S -c`: isolated (no user site, no PYTHON* variables) and without
# site imports, so they start in ~50 ms and cannot pick up anything from the environment.
_MRELEASE_CHILD = f"""
import os, time
block = bytearray({MRELEASE_PROBE_MIB} << 20)
for offset in range(0, len(block), 4096):
    block[offset] = 1
os.write(1, b"ready\\n")
time.sleep(60)
"""


def kernel_version(release: str | None = None) -> tuple[int, int] | None:
    """``(major, minor)`` out of ``uname -r`` (``6.18.44-fc`` -> ``(6, 18)``), None if odd."""
    match = re.match(r"(\d+)\.(\d+)", release if release is not None else platform.release())
    return (int(match[1]), int(match[2])) if match else None


def check_kernel(release: str | None = None) -> CheckResult:
    """The version only explains the other results; each feature is still tried for real."""
    release = release if release is not None else platform.release()
    version = kernel_version(release)
    facts = {"release": release}
    if version is None:
        return CheckResult(
            "kernel",
            Status.WARN,
            f"Linux {release}: version not recognised",
            "Rely on the individual checks below, which try each feature for real.",
            facts=facts,
        )
    if version < MIN_KERNEL_FOR_MRELEASE:
        return CheckResult(
            "kernel",
            Status.WARN,
            f"Linux {release}: older than 5.15, so no process_mrelease"
            + ("" if version >= MIN_KERNEL_FOR_CGROUP_KILL else " and no cgroup.kill"),
            "Use Linux 5.15 or later so killed processes' memory is freed at once.",
            facts=facts,
        )
    return CheckResult(
        "kernel",
        Status.OK,
        f"Linux {release} (5.15+: PSI triggers, pidfd, cgroup.kill, process_mrelease)",
        facts=facts,
    )


def check_pidfd() -> CheckResult:
    """Every kill goes through a pidfd (no PID-reuse race): essential."""
    try:
        fd = pidfd.open_pidfd(os.getpid())
    except (OSError, AttributeError) as exc:
        return CheckResult(
            "pidfd",
            Status.FAIL,
            f"pidfd_open failed: {exc}",
            "Use Linux 5.3 or later (pidfd_open, pidfd_send_signal).",
            essential=True,
        )
    try:
        # Signal 0 checks pidfd_send_signal and our right to signal without delivering anything.
        pidfd.send_signal(fd, 0)
    except OSError as exc:
        return CheckResult(
            "pidfd",
            Status.FAIL,
            f"pidfd_send_signal failed: {exc}",
            "Use Linux 5.1 or later and a seccomp profile that allows pidfd_send_signal.",
            essential=True,
        )
    finally:
        pidfd.close_quietly(fd)
    return CheckResult("pidfd", Status.OK, "pidfd_open and pidfd_send_signal work", essential=True)


def start_mrelease_probe() -> subprocess.Popen[bytes] | None:
    """Start the throw-away child :func:`check_mrelease` kills (early, to overlap start-up)."""
    return start_child(_MRELEASE_CHILD)


def check_mrelease(child: subprocess.Popen[bytes] | None = None) -> CheckResult:
    """Kill a throw-away child holding a few MiB through its pidfd and ``process_mrelease`` it,
    exactly as the reaper does. Missing mrelease is a warning: kills still work, but a starved
    victim then frees its memory at its own pace (seconds to minutes)."""
    remedy_kernel = "Use Linux 5.15 or later so killed processes' memory is freed at once."
    child = child or start_mrelease_probe()
    fd = -1
    try:
        if child is None or read_line(child, PROBE_TIMEOUT_S) != b"ready":
            return CheckResult(
                "process_mrelease",
                Status.WARN,
                "the throw-away child did not start, so process_mrelease was not tried",
                f"Check that {sys.executable} can start; then run doctor again.",
            )
        fd = pidfd.open_pidfd(child.pid)
        pidfd.send_signal(fd, signal.SIGKILL)
        result = pidfd.process_mrelease(fd)
        exited = pidfd.wait_exited(fd, PROBE_TIMEOUT_S)
    except OSError as exc:
        return CheckResult(
            "process_mrelease",
            Status.WARN,
            f"could not kill the throw-away child through a pidfd: {exc}",
            "Fix the pidfd check first.",
        )
    finally:
        if fd >= 0:
            pidfd.close_quietly(fd)
        if child is not None:
            finish_child(child)
    facts: dict[str, object] = {
        "result": str(result.status),
        "errno": errno_name(result.errno) if result.errno else None,
        "duration_us": result.duration_ns // 1000,
        "child_mib": MRELEASE_PROBE_MIB,
        "child_exited": exited,
    }
    status = pidfd.MreleaseStatus
    if result.status is status.REAPED:
        detail = (
            f"killed a child holding {MRELEASE_PROBE_MIB} MiB via its pidfd and reaped its "
            f"memory in {result.duration_ns / 1e6:.2f} ms"
        )
        return CheckResult("process_mrelease", Status.OK, detail, facts=facts)
    if result.status is status.GONE:
        detail = (
            "killed a child via pidfd; process_mrelease answered ESRCH (gone: the child "
            "released its memory first), so the call exists and works"
        )
        return CheckResult("process_mrelease", Status.OK, detail, facts=facts)
    if result.status is status.UNSUPPORTED:
        return CheckResult(
            "process_mrelease",
            Status.WARN,
            "process_mrelease is not available (ENOSYS): kills work, memory returns at the "
            "victim's pace",
            remedy_kernel,
            facts=facts,
        )
    return CheckResult(
        "process_mrelease",
        Status.WARN,
        f"process_mrelease on a killed child answered {result.status} "
        f"({errno_name(result.errno)}): kills work, reaping may not",
        "Check seccomp or LSM policy for syscall 448 (process_mrelease).",
        facts=facts,
    )
