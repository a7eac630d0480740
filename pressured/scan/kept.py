"""Skim files kept open between scans: the open is paid once per process, not per event.

Opening ``/proc/PID/oom_score`` costs more than generating it (path walk, a new file): on this
machine about 6 µs against 1.5 µs for a ``pread`` at offset 0 on an fd kept open, which
regenerates the file. So a scope may keep one fd per process in scope, opened when a scan
first meets the process and closed when a scan no longer finds it in scope, or when its read
fails (a kept fd names the process, not the PID number: after the process exits, reads fail
with ESRCH, and a new process reusing the PID is opened afresh). Nothing here runs between
events: the fds just stay open.

The cost is memory the kernel keeps for each open file (its seq_file buffer of one page,
allocated on the first read, plus the file itself: about 4.5 KiB per process, charged to the
daemon's cgroup; ``benchmarks/reaction.py`` measures it) and one fd each, so the table is
bounded by ``max_fds``; processes beyond it are skimmed with a fresh open, as without it.
The bound is for all of a scope's kept files together (:class:`KeptSkims`): a chain that
skims two files per process (the default chain: ``stat`` and ``oom_score``) keeps the first
file's fds for every process before the second gets any, never twice the bound.

A ``stat`` skim also keeps its last :data:`GENERATIONS` readings (one
:data:`~pressured.kernel.procfs.StatLine` per process and when it was taken): the earlier
sample that fault and growth rates need (:mod:`pressured.policies.culprit`), so an event that
finds a recent one does not wait for a second sample. Measured at 10,000 processes: the kept
stat fds hold 61 MiB of kernel slab (52 MiB for oom_score's), the two generations 7 MiB of
Python heap (tracemalloc); each scan replaces the older generation, nothing refreshes them
between events.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pressured.errors import ParseError
from pressured.kernel import procfs
from pressured.kernel.cgroupfs import Cgroup
from pressured.kernel.procfs import ScanProblem, SkimResult, StatLine
from pressured.scan import skim as skim_module

_V = TypeVar("_V")

_WHICH = {"statm": 0, "oom_score": 1, "stat": 2}
GENERATIONS = 2
"""Stat readings kept: the last, and the one before it (for an event that follows a scan by
less than the shortest usable interval)."""
BORN_SINCE_MARGIN_NS = 500_000_000
"""A process a reading did not see counts as born since it if it started no earlier than this
before the reading: the PIDs are listed before the reading begins (10,000 of them take tens
of ms), and a new process joins its cgroup a moment after its fork (``echo $$ >
cgroup.procs; exec``), so one born just before the reading can still be missing from it. Its
faults since birth then count over the interval plus at most this margin."""
SPLIT_AT = 512
"""Kept fds from which a native skim reads in two halves at once, the second on a helper
thread: reading ``stat`` costs about 7 µs per process here, 70 ms at 10,000, and the other
core is usually free. Below this the hop to the helper costs more than half the reads."""


@dataclass(frozen=True, slots=True)
class StatGeneration:
    """One stat skim: every process's line, and when the skim began."""

    taken_ns: int
    lines: dict[int, StatLine]
    born_after: int = -1
    """The start time (clock ticks) from which a process it did not see counts as born since
    (:func:`~pressured.kernel.procfs.start_ticks_at`), fixed once so that every use agrees."""

    def __post_init__(self) -> None:
        if self.born_after < 0:
            born_after = procfs.start_ticks_at(self.taken_ns - BORN_SINCE_MARGIN_NS)
            object.__setattr__(self, "born_after", born_after)


def usable_generation(
    generations: Sequence[StatGeneration], now_ns: int, min_age_ns: int, max_age_ns: int
) -> StatGeneration | None:
    """The newest generation old enough for steady rates and young enough to matter (the
    rule of :meth:`pressured.history.ProcessHistory.usable`)."""
    for generation in reversed(generations):
        if min_age_ns <= now_ns - generation.taken_ns <= max_age_ns:
            return generation
    return None


def _close_all(fds: dict[int, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def default_max_fds() -> int:
    """Half the soft RLIMIT_NOFILE, at most 16,384: the rest stays for everything else."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(0, min(16_384, soft // 2))


class KeptSkim:
    """One kept fd per process for one skim file (``statm``, ``oom_score`` or ``stat``)."""

    def __init__(
        self,
        name: str,
        proc_root: str = "/proc",
        max_fds: int | None = None,
        others: Callable[[], int] | None = None,
        helper: Executor | None = None,
    ) -> None:
        if name not in _WHICH:
            raise ValueError(f"cannot skim {name!r}: one of {sorted(_WHICH)}")
        self.name = name
        self.proc_root = proc_root
        self.max_fds = default_max_fds() if max_fds is None else max_fds
        self.others = others
        """How many fds other kept files of the same scope hold (they share ``max_fds``)."""
        self.helper = helper
        """Reads the second half of a large skim at the same time (see :data:`SPLIT_AT`)."""
        self.closed = False
        """Closed by its scope: later skims open afresh and keep nothing."""
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()
        self.generations: deque[StatGeneration] = deque(maxlen=GENERATIONS)
        """A stat skim's last readings (empty for the other files)."""
        # A scope dropped at reload must not leak its fds until the process exits.
        self._finalizer = weakref.finalize(self, _close_all, self._fds)

    def __len__(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            _close_all(self._fds)

    def retain(self, pids: set[int]) -> int:
        """Close the fds of processes no longer in ``pids`` (the scope's members now); the
        number closed. A scope that gets no further event would otherwise hold them."""
        with self._lock:
            gone = [pid for pid in self._fds if pid not in pids]
            for pid in gone:
                with contextlib.suppress(OSError):
                    os.close(self._fds.pop(pid))
            return len(gone)

    def skim(
        self,
        proc_root: str,
        pids: Sequence[int],
        name: str,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> SkimResult:
        """Same contract as :func:`pressured.kernel.procfs.skim_python`."""
        if name != self.name or proc_root != self.proc_root:
            return skim_module.skim(proc_root, pids, name, deadline, clock)
        with self._lock:
            if self.closed:
                return skim_module.skim(proc_root, pids, name, deadline, clock)
            result = self._skim(pids, deadline, clock)
            if self.name == "stat" and result.complete:
                self.generations.append(StatGeneration(result.taken_ns, result.lines))
            return result

    def _skim(
        self, pids: Sequence[int], deadline: float | None, clock: Callable[[], float]
    ) -> SkimResult:
        problems: list[ScanProblem] = []
        vanished = 0
        fresh: list[int] = []
        table = self._fds
        taken_ns = time.monotonic_ns()
        if len(table) > len(pids) or any(pid not in table for pid in pids):
            in_scope = set(pids)
            for pid in [pid for pid in table if pid not in in_scope]:
                os.close(table.pop(pid))  # left the scope (or exited unseen)
            room = self.max_fds - (self.others() if self.others is not None else 0)
            if not table and room <= 0:
                fresh = list(pids)  # the budget is spent on other files: none kept here
            for pid in [] if fresh else pids:
                if pid in table:
                    continue
                if len(table) >= room:
                    fresh.append(pid)
                    continue
                try:
                    fd = os.open(f"{self.proc_root}/{pid}/{self.name}", os.O_RDONLY | os.O_CLOEXEC)
                except (FileNotFoundError, ProcessLookupError):
                    vanished += 1
                    continue
                except OSError as exc:
                    problems.append(ScanProblem(pid, f"{exc.strerror}: {exc.filename}"))
                    continue
                table[pid] = fd
        # Steady state (the same processes as last time) skips all of the above but one pass.
        kept_pids = list(table)
        values, failed, complete = self._pread(list(table.values()), kept_pids, deadline, clock)
        lines: dict[int, StatLine] = {}
        if self.name == "stat":
            lines = dict(cast("list[tuple[int, StatLine]]", values))
            result: dict[int, int] = skim_module.stat_sizes(lines)
        else:
            result = dict(cast("list[tuple[int, int]]", values))
        for pid, err in failed:
            os.close(table.pop(pid))
            if err == errno.ESRCH:
                vanished += 1
            else:
                what = os.strerror(err) if err else "malformed"
                problems.append(ScanProblem(pid, f"{what}: {self.proc_root}/{pid}/{self.name}"))
        if fresh and complete:
            rest = skim_module.skim(self.proc_root, fresh, self.name, deadline, clock)
            result.update(rest.values)
            lines.update(rest.lines)
            problems.extend(rest.problems)
            vanished += rest.vanished
            complete = rest.complete
        return SkimResult(result, tuple(problems), vanished, complete, lines, taken_ns)

    def _pread(
        self, fds: list[int], pids: list[int], deadline: float | None, clock: Callable[[], float]
    ) -> tuple[list[tuple[int, int]] | list[tuple[int, StatLine]], list[tuple[int, int]], bool]:
        native = skim_module.native_module()
        if skim_module.native_reads(self.name) and clock is time.monotonic:
            deadline_ns = -1 if deadline is None else max(0, int(deadline * 1e9))
            which = _WHICH[self.name]

            def read(fds: list[int], pids: list[int]) -> _Read:
                values, failed, complete = native.pread_many(
                    fds, pids, which, procfs.PAGE_SIZE, deadline_ns
                )
                return values, failed, bool(complete)

            if self.helper is not None and len(fds) >= SPLIT_AT:
                return read_in_halves(read, fds, pids, self.helper)
            return read(fds, pids)
        if self.name == "stat":
            return _pread_each(
                fds,
                pids,
                procfs.STAT_READ_LIMIT,
                procfs.parse_stat_line,
                deadline=deadline,
                clock=clock,
            )
        name = self.name
        return _pread_each(
            fds,
            pids,
            128,
            lambda data: procfs.parse_skim(name, data),
            deadline=deadline,
            clock=clock,
        )


_Read = tuple[list[Any], list[tuple[int, int]], bool]
"""A kept-fd loop's answer: ``(pid, value)`` read, ``(pid, errno)`` failed, finished in time."""


def read_in_halves(
    read: Callable[[list[int], list[int]], _Read],
    fds: list[int],
    pids: list[int],
    helper: Executor,
) -> _Read:
    """``read`` of the first half here while ``helper`` reads the second. A helper busy with
    other work (its thread may be the one running this) never delays the skim: if the second
    half has not started when the first is done, it is taken back and read here."""
    half = len(fds) // 2
    try:
        second = helper.submit(read, fds[half:], pids[half:])
    except RuntimeError:  # the helper was shut down (the scope is closing)
        return read(fds, pids)
    values, failed, complete = read(fds[:half], pids[:half])
    rest = read(fds[half:], pids[half:]) if second.cancel() else second.result()
    return values + rest[0], failed + rest[1], complete and rest[2]


def _pread_each(
    fds: list[int],
    pids: list[int],
    limit: int,
    parse: Callable[[bytes], _V],
    *,
    deadline: float | None,
    clock: Callable[[], float],
) -> tuple[list[tuple[int, _V]], list[tuple[int, int]], bool]:
    """The pure-Python kept-fd loop (the native one's reference), for any skimmed file:
    ``(pid, value)`` read, ``(pid, errno)`` failed (0: malformed), and whether it finished
    before ``deadline`` (checked every ``SKIM_MINIMUM`` reads)."""
    ok: list[tuple[int, _V]] = []
    bad: list[tuple[int, int]] = []
    for index, (fd, pid) in enumerate(zip(fds, pids, strict=True)):
        checkpoint = index and index % procfs.SKIM_MINIMUM == 0
        if deadline is not None and checkpoint and clock() > deadline:
            return ok, bad, False
        try:
            ok.append((pid, parse(os.pread(fd, limit, 0))))
        except ParseError:
            bad.append((pid, 0))
        except OSError as exc:
            bad.append((pid, exc.errno or errno.EIO))
    return ok, bad, True


class KeptSkims:
    """A scope's kept skim files, one :class:`KeptSkim` per file name, made on first use.

    The scope closes them (on its own loop thread) while its I/O thread may be skimming or
    warming up: the table of files is changed under a lock, and a skim after the close reads
    with fresh opens instead of keeping new fds nobody would close."""

    def __init__(
        self,
        proc_root: str = "/proc",
        max_fds: int | None = None,
        helper: Executor | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.max_fds = default_max_fds() if max_fds is None else max_fds
        """The fd budget of all the scope's kept files together."""
        # Two halves at once only help where this process may run on two CPUs.
        self.helper = helper if len(os.sched_getaffinity(0)) > 1 else None
        self._by_name: dict[str, KeptSkim] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _files(self) -> list[KeptSkim]:
        with self._lock:
            return list(self._by_name.values())

    @property
    def open_fds(self) -> int:
        return sum(len(kept) for kept in self._files())

    def open_by_name(self) -> dict[str, int]:
        """Open fds per kept file name, for the files that hold any."""
        return {kept.name: len(kept) for kept in self._files() if len(kept)}

    def skim(
        self,
        proc_root: str,
        pids: Sequence[int],
        name: str,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> SkimResult:
        with self._lock:
            kept = self._by_name.get(name)
            if kept is None and not self._closed:

                def others(name: str = name) -> int:
                    return sum(len(k) for k in self._files() if k.name != name)

                kept = self._by_name[name] = KeptSkim(
                    name, self.proc_root, self.max_fds, others, self.helper
                )
        if kept is None:
            return skim_module.skim(proc_root, pids, name, deadline, clock)
        return kept.skim(proc_root, pids, name, deadline, clock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for kept in self._files():
            kept.close()

    def earlier_stat(self, now_ns: int, min_age_ns: int, max_age_ns: int) -> StatGeneration | None:
        """The newest kept stat reading aged between ``min_age_ns`` and ``max_age_ns``."""
        with self._lock:
            kept = self._by_name.get("stat")
        if kept is None:
            return None
        with kept._lock:
            generations = list(kept.generations)
        return usable_generation(generations, now_ns, min_age_ns, max_age_ns)

    def retain(self, pids: set[int]) -> int:
        return sum(kept.retain(pids) for kept in self._files())


def release_departed(kept: KeptSkims, cgroup: Cgroup | None, proc_root: str = "/proc") -> int:
    """After a kill: close the kept files of processes that have left the scope (a cgroup
    victim of 2,000 members would otherwise keep 2,000 fds until the scope's next event).
    Members are what the cgroup (or /proc) lists now; an exited task leaves its cgroup at
    exit, before it is reaped. Never raises; the number closed."""
    try:
        pids = set(cgroup.member_paths(errors=[])) if cgroup else set(procfs.list_pids(proc_root))
    except OSError:
        return 0
    return kept.retain(pids)


def prewarm(
    kept: KeptSkims, names: Sequence[str], pids: Sequence[int], proc_root: str = "/proc"
) -> int:
    """Open the skim files of ``pids`` now (once, at start-up, after the triggers are armed),
    so the first event pays only for processes started since. Returns the fds kept."""
    for name in names:
        kept.skim(proc_root, pids, name)
    return kept.open_fds


def prewarm_scope(
    kept: KeptSkims,
    files: Sequence[str],
    cgroup: Cgroup | None,
    proc_root: str = "/proc",
) -> int:
    """:func:`prewarm` for a scope's current members (a cgroup's, or every process). Never
    raises: a failed warm-up only leaves the first event to open the files itself."""
    if not files:
        return 0
    try:
        pids = list(cgroup.member_paths(errors=[])) if cgroup else procfs.list_pids(proc_root)
        return prewarm(kept, files, pids, proc_root)
    except OSError:
        return kept.open_fds
