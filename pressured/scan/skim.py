"""The skim: one number per process from one lock-free procfs file, as fast as it can go.

The optional native extension :mod:`pressured.scan._skim` (C, built by setuptools when a
compiler is present) runs the open/read/close loop without the interpreter in between and
with the GIL released; :func:`pressured.kernel.procfs.skim_python` is the fallback and the
reference: both give the same result (tests/test_scan_skim.py runs both).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from pressured.kernel import procfs
from pressured.kernel.procfs import ScanProblem, SkimResult

SkimFn = Callable[[str, Sequence[int], str, "float | None", Callable[[], float]], SkimResult]

try:
    from pressured.scan import _skim  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time, or PRESSURED_NO_NATIVE: pure Python
    _skim = None

NATIVE_AVAILABLE = _skim is not None and os.environ.get("PRESSURED_NO_NATIVE") != "1"

_WHICH = {"statm": 0, "oom_score": 1, "stat": 2}


def native_module() -> Any:
    """The native extension module, or None where it is not built."""
    return _skim


def native_reads(name: str) -> bool:
    """Whether the native extension (where available and not disabled) can skim ``name``: an
    extension built before the ``stat`` skim existed cannot, and must not be asked to."""
    if not NATIVE_AVAILABLE or _skim is None:
        return False
    return name != "stat" or hasattr(_skim, "family_bounds")


def skim_native(
    proc_root: str, pids: Sequence[int], name: str, deadline: float | None = None
) -> SkimResult:
    """The native loop: same contract as :func:`pressured.kernel.procfs.skim_python`."""
    if _skim is None:
        raise RuntimeError("the native skim extension is not built")
    if name not in _WHICH:
        raise ValueError(f"cannot skim {name!r}: one of {sorted(_WHICH)}")
    deadline_ns = -1 if deadline is None else max(0, int(deadline * 1e9))
    taken_ns = time.monotonic_ns()
    values, failed, vanished, complete = _skim.skim(
        proc_root, list(pids), _WHICH[name], procfs.PAGE_SIZE, deadline_ns
    )
    problems = tuple(
        ScanProblem(pid, f"{os.strerror(err) if err else 'malformed'}: {proc_root}/{pid}/{name}")
        for pid, err in failed
    )
    if name == "stat":
        lines = dict(values)
        return SkimResult(stat_sizes(lines), problems, vanished, bool(complete), lines, taken_ns)
    return SkimResult(dict(values), problems, vanished, bool(complete), taken_ns=taken_ns)


def stat_sizes(lines: dict[int, procfs.StatLine]) -> dict[int, int]:
    """Resident bytes by PID from a stat skim's lines (a stat skim's ``values``)."""
    page = procfs.PAGE_SIZE
    return {pid: line[procfs.LINE_RSS_PAGES] * page for pid, line in lines.items()}


def skim(
    proc_root: str,
    pids: Sequence[int],
    name: str,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SkimResult:
    """The native skim where built (and not disabled), else the pure-Python one. A test's
    own ``clock`` (anything but :func:`time.monotonic`) takes the Python path, which uses it."""
    if native_reads(name) and clock is time.monotonic:
        return skim_native(proc_root, pids, name, deadline)
    return procfs.skim_python(proc_root, pids, name, deadline, clock)
