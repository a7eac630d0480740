"""Memory: swap, and whether the daemon can lock its own pages (mlockall, tried in a child)."""

from __future__ import annotations

import json
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
from pressured.kernel import procfs

_MLOCK_CHILD = """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
result = {}
for flags in (7, 3):  # MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT, then without ONFAULT
    ok = libc.mlockall(flags) == 0
    result[str(flags)] = 0 if ok else ctypes.get_errno()
    if ok:
        break
print(json.dumps(result))
"""

_MCL_ALL = 7
_MCL_NO_ONFAULT = 3
_MCL_LABELS = {
    _MCL_ALL: "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT",
    _MCL_NO_ONFAULT: "MCL_CURRENT|MCL_FUTURE",
}


def _gib(value: int) -> str:
    return f"{value / (1 << 30):.1f} GiB"


def check_swap(proc_root: str = "/proc") -> CheckResult:
    """Swap changes where pressure comes from (swap-in) and what a kill gives back."""
    try:
        meminfo = procfs.read_meminfo(proc_root)
    except OSError as exc:
        return CheckResult(
            "swap", Status.WARN, f"cannot read meminfo: {exc}", "Make /proc visible to pressured."
        )
    total, free = meminfo.get("SwapTotal", 0), meminfo.get("SwapFree", 0)
    facts = {"total_bytes": total, "free_bytes": free, "mem_total_bytes": meminfo.get("MemTotal")}
    if total == 0:
        detail = (
            "no swap: anonymous memory cannot be reclaimed, pressure comes from the page cache "
            "and the kernel OOM killer is close behind"
        )
    else:
        detail = f"{_gib(total)} total, {_gib(free)} free"
    return CheckResult("swap", Status.OK, detail, facts=facts)


def start_mlock_probe() -> subprocess.Popen[bytes] | None:
    """Start the child that tries ``mlockall`` (early, to overlap its start-up)."""
    return start_child(_MLOCK_CHILD)


def check_mlockall(child: subprocess.Popen[bytes] | None = None) -> CheckResult:
    """Try ``mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT)`` in a short-lived child, so doctor's
    own memory stays unlocked; the daemon locks itself so it never stalls in reclaim."""
    remedy = "Grant CAP_IPC_LOCK or raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity in the unit)."
    child = child or start_mlock_probe()
    line = b""
    if child is not None:
        try:
            line = read_line(child, PROBE_TIMEOUT_S)
        finally:
            finish_child(child)
    try:
        answers = {int(key): int(value) for key, value in json.loads(line).items()}
    except (ValueError, AttributeError, TypeError):
        return CheckResult(
            "mlockall",
            Status.WARN,
            "the probe child gave no answer, so mlockall was not tried",
            f"Check that {sys.executable} can start; then run doctor again.",
        )
    facts: dict[str, object] = {
        label: errno_name(answers[flags]) if answers[flags] else "ok"
        for flags, label in _MCL_LABELS.items()
        if flags in answers
    }
    if answers.get(_MCL_ALL) == 0:
        return CheckResult(
            "mlockall",
            Status.OK,
            "mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT) works (tried in a child)",
            facts=facts,
        )
    if answers.get(_MCL_NO_ONFAULT) == 0:
        return CheckResult(
            "mlockall",
            Status.WARN,
            "mlockall works only without MCL_ONFAULT: every mapping is populated and locked",
            "Use Linux 4.4+ for MCL_ONFAULT to keep the locked footprint small.",
            facts=facts,
        )
    return CheckResult(
        "mlockall",
        Status.WARN,
        f"mlockall refused ({facts.get(_MCL_LABELS[_MCL_ALL])}): the daemon's own "
        "pages can be reclaimed under pressure",
        remedy,
        facts=facts,
    )
