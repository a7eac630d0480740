"""Who reads from storage: the probe that sees a page-cache thrasher page faults cannot see.

A process that re-reads a file larger than its group's memory through ``read(2)`` (not
``mmap``) makes almost no page faults: the kernel copies cached pages into its buffer, and
the misses are fetched by readahead in the kernel's context. ``/proc/PID/io`` ``read_bytes``
counts what it made the block layer fetch (docs/design.md: about 1.2 GiB/s for such a reader
here, 15 minor faults/s). Fault and growth rates, which ``culprit`` ranks on, miss it, and
the size fallback then kills an idle bystander that merely is larger.

Reading ``io`` for every process on every event would cost as much again as the ``stat``
skim, for a case that is rare; so the probe runs only when a family ranking finds nobody
faulting or growing fast enough (the size fallback is next), and only while the scope's own
refault counter rises (:mod:`pressured.readprobe`: a reader that thrashes makes the scope
refault; a quiet scope, or an injected event on one, pays nothing). It reads everyone's
``read_bytes``, waits ``wait_s``, reads again, and hands back each process's rate.

``/proc/PID/io`` takes no mmap lock (the task's own counters, summed over its threads under
the signal lock), so a process stuck in a fault cannot stall the probe.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

Identity = tuple[int, int]

ReadProbe = Callable[[Sequence[int]], "dict[int, int] | None"]
"""PIDs -> bytes per second each made the kernel fetch from storage during the probe (only
those that fetched anything: a PID not in the answer read nothing, or is gone); None when
the probe chose not to measure (its scope's gate was shut)."""

_FIELD = b"read_bytes:"


def storage_reads(pid: int, proc_root: str = "/proc") -> int | None:
    """``read_bytes`` of ``/proc/PID/io`` (cumulative, whole thread group), or None when the
    process is gone or the file is unreadable or malformed."""
    try:
        fd = os.open(f"{proc_root}/{pid}/io", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 512)
    except OSError:
        return None
    finally:
        os.close(fd)
    start = data.find(_FIELD)
    if start < 0:
        return None
    end = data.find(b"\n", start)
    try:
        return int(data[start + len(_FIELD) : end if end >= 0 else None])
    except ValueError:
        return None


def probe_read_rates(
    pids: Sequence[int],
    *,
    wait_s: float,
    proc_root: str = "/proc",
    sleep: Callable[[float], None] = time.sleep,
) -> dict[int, int]:
    """Each PID's storage reads per second (whole bytes, so sums over families are exact)
    over ``wait_s`` between two readings; PIDs that read nothing or vanished are left out. A
    PID reused within ``wait_s`` could lend its newcomer's reads to the old process; over a
    tenth of a second that needs the PID space to wrap, which this ignores."""
    before: dict[int, int] = {}
    for pid in pids:
        value = storage_reads(pid, proc_root)
        if value is not None:
            before[pid] = value
    started = time.monotonic_ns()
    sleep(wait_s)
    rates: dict[int, int] = {}
    after: dict[int, int] = {}
    for pid in before:
        value = storage_reads(pid, proc_root)
        if value is not None:
            after[pid] = value
    elapsed_s = max((time.monotonic_ns() - started) / 1e9, 1e-3)
    for pid, value in after.items():
        fetched = value - before[pid]
        if fetched > 0:
            rates[pid] = int(fetched / elapsed_s)
    return rates


def make_probe(proc_root: str, wait_s: float) -> ReadProbe:
    """A probe of ``proc_root`` waiting ``wait_s`` between its two readings."""

    def probe(pids: Sequence[int]) -> dict[int, int]:
        return probe_read_rates(pids, wait_s=wait_s, proc_root=proc_root)

    return probe


def by_identity(rates: Mapping[int, int], identities: Iterable[Identity]) -> dict[Identity, int]:
    """``rates`` keyed by process identity ``(pid, start_time)`` for the given identities."""
    return {identity: rates[identity[0]] for identity in identities if identity[0] in rates}
