"""The immutable picture of a scope that policies decide on, and the code that takes it.

``take_snapshot`` is synchronous and reads procfs and cgroupfs: the controller runs it on its
I/O worker thread in one hop. Policies only ever see the resulting :class:`Snapshot`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import structlog

from pressured.errors import KernelError, ParseError
from pressured.events import PressureEvent
from pressured.kernel import procfs
from pressured.kernel.cgroupfs import Cgroup, CgroupLayout, MemoryFigures
from pressured.kernel.procfs import ProcessRecord, ScanProblem

# Re-exported under its old home: policies and plugins import it from here.
from pressured.kernel.procfs import ProcessSample as ProcessSample  # noqa: PLC0414
from pressured.kernel.psi import Pressure
from pressured.oomd_marks import AVOID_XATTRS, OMIT_XATTRS, PREFER_XATTRS
from pressured.protection import within
from pressured.scan.cmdline import CmdlineReader, shared_reader
from pressured.scan.kept import KeptSkims
from pressured.scan.plan import ScanPlan
from pressured.scan.reads import ReadProbe
from pressured.scan.skim import skim as fresh_skim
from pressured.scan.twophase import scan_two_phase

log = structlog.get_logger("pressured.snapshot")


@dataclass(frozen=True, slots=True)
class CgroupRecord:
    """One cgroup in scope: its memory, pressure, members and oomd markings."""

    path: str
    memory: MemoryFigures | None
    pressure: Pressure | None
    pids: tuple[int, ...]
    """Processes directly in the group or any descendant."""
    reclaim_pages: int = 0
    """Cumulative pages scanned by reclaim (``pgscan`` in memory.stat) where known."""
    prefer: bool = False
    """oomd's ``trusted.oomd_prefer`` (or ``user.oomd_prefer``) extended attribute is set."""
    avoid: bool = False
    """oomd's ``trusted.oomd_avoid`` (or ``user.oomd_avoid``) extended attribute is set."""
    omit: bool = False
    """systemd's ``user.oomd_omit`` (ManagedOOMPreference=omit, or ``trusted.``): never kill."""

    @property
    def usage_bytes(self) -> int:
        return self.memory.current_bytes if self.memory else 0


@dataclass(frozen=True, slots=True)
class SystemMemory:
    total_bytes: int
    available_bytes: int
    swap_total_bytes: int
    swap_free_bytes: int

    @property
    def available_percent(self) -> float:
        return 100.0 * self.available_bytes / self.total_bytes if self.total_bytes else 100.0

    @property
    def swap_free_percent(self) -> float:
        if not self.swap_total_bytes:
            return 0.0
        return 100.0 * self.swap_free_bytes / self.swap_total_bytes

    @classmethod
    def from_meminfo(cls, meminfo: Mapping[str, int]) -> SystemMemory:
        return cls(
            total_bytes=meminfo.get("MemTotal", 0),
            available_bytes=meminfo.get("MemAvailable", meminfo.get("MemFree", 0)),
            swap_total_bytes=meminfo.get("SwapTotal", 0),
            swap_free_bytes=meminfo.get("SwapFree", 0),
        )


@dataclass(frozen=True, slots=True)
class RecentKill:
    """What policies may know about earlier kills (to avoid hammering one group)."""

    target: str
    pid: int | None
    cgroup: str | None
    wall_time: float
    policy: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a policy may look at. Frozen: policies cannot change what others see."""

    scope: str
    event: PressureEvent
    processes: tuple[ProcessRecord, ...]
    cgroups: tuple[CgroupRecord, ...] = ()
    """For a cgroup scope: the scope group itself first, then its direct children."""
    memory: SystemMemory | None = None
    recent_kills: tuple[RecentKill, ...] = ()
    self_pid: int = field(default_factory=os.getpid)
    taken_monotonic_ns: int = field(default_factory=time.monotonic_ns)
    scan_duration_ns: int = 0
    complete: bool = True
    problems: tuple[ScanProblem, ...] = ()
    previous: Mapping[tuple[int, int], ProcessSample] = field(default_factory=dict)
    """Earlier samples by process identity ``(pid, start_time)``, where the scanner kept any:
    growth and fault rates are the difference. Empty when there is no history."""
    expected_processes: int | None = None
    """How many processes the scope held when the scan began (None where unknown): with
    ``complete`` False, ``len(processes)`` of this many were read before the deadline."""
    skimmed: int = 0
    """Processes whose one cheap number (resident size or oom_score) was read in the scan's
    first phase; ``processes`` holds the full records of the finalists among them."""
    full_scan: bool = True
    """True when every process's full record was read (no plan, or a policy that needs it)."""
    scan_started_monotonic_ns: int = 0
    """When the scan began on its worker thread: the hop to that thread is the time between
    the event's decision to scan and this."""
    cgroups_read_ns: int = 0
    """Of ``scan_duration_ns``, the part spent before any process was read: meminfo, the
    member walk and the cgroup records (memory.stat and friends)."""
    rates_sampled: bool = False
    """True when the scan itself took :attr:`previous` (a stat skim against a kept or second
    reading, for a family policy): history must neither replace it nor sample again."""
    read_rates: Mapping[tuple[int, int], int] | None = None
    """Storage reads in bytes per second by process identity, where a read probe ran
    (:mod:`pressured.scan.reads`: only when a family ranking found nobody faulting or growing
    and the scope refaulted); None where none ran. A process absent from it read nothing."""
    protected: frozenset[int] = frozenset()
    """PIDs the guard will refuse (PID 1, us, kernel threads, adj -1000, configured
    protection). Left out of :attr:`candidates` so policies rank only what may die; the guard
    still re-checks every victim a policy returns."""

    def process(self, pid: int) -> ProcessRecord | None:
        for record in self.processes:
            if record.pid == pid:
                return record
        return None

    def cgroup(self, path: str) -> CgroupRecord | None:
        for record in self.cgroups:
            if record.path == path:
                return record
        return None

    @property
    def candidates(self) -> tuple[ProcessRecord, ...]:
        """User processes other than ourselves, zombies and protected ones: what a process
        policy ranks."""
        return tuple(
            p
            for p in self.processes
            if is_candidate(p, self.self_pid) and p.pid not in self.protected
        )

    @property
    def read_processes(self) -> int:
        """How many processes the scan read anything of (skimmed, or read in full)."""
        return max(self.skimmed, len(self.processes))


def is_candidate(record: ProcessRecord, self_pid: int) -> bool:
    """The snapshot's own rule before protection: a user process, alive, not PID 1 or us."""
    return (
        not record.is_kernel_thread
        and record.state != "Z"  # a zombie's memory is already gone: killing it frees nothing
        and record.pid not in (1, self_pid)
    )


def scan_is_empty(snapshot: Snapshot) -> bool:
    """Nothing at all was read of a scope that has members: never "no candidate"."""
    return (
        bool(snapshot.expected_processes)
        and snapshot.read_processes == 0
        and (snapshot.full_scan or not snapshot.complete)
    )


def read_cgroup_record(
    group: Cgroup, *, with_pressure: bool = True, pids: tuple[int, ...] | None = None
) -> CgroupRecord:
    """Read one group's figures. Missing optional files leave fields empty, never raise."""
    try:
        memory: MemoryFigures | None = group.memory()
    except (KernelError, OSError, ParseError):
        memory = None
    pressure = None
    if with_pressure:
        try:
            pressure = group.pressure()
        except (OSError, ParseError):
            pressure = None
    try:
        stat = group.memory_stat()
    except (OSError, ParseError):
        stat = {}
    xattrs = group.xattrs()
    return CgroupRecord(
        path=group.path,
        memory=memory,
        pressure=pressure,
        pids=tuple(group.all_members()) if pids is None else pids,
        reclaim_pages=stat.get("pgscan", stat.get("total_pgpgout", 0)),
        prefer=any(name in xattrs for name in PREFER_XATTRS),
        avoid=any(name in xattrs for name in AVOID_XATTRS),
        omit=any(name in xattrs for name in OMIT_XATTRS),
    )


def take_snapshot(
    event: PressureEvent,
    *,
    layout: CgroupLayout | None,
    proc_root: str = "/proc",
    cgroup_path: str | None = None,
    memcg_v1_path: str | None = None,
    read_scope_pressure: bool = False,
    recent_kills: tuple[RecentKill, ...] = (),
    deadline_s: float = 2.0,
    cmdline_limit: int = procfs.DEFAULT_CMDLINE_LIMIT,
    protection: Callable[[ProcessRecord], str | None] | None = None,
    plan: ScanPlan | None = None,
    cmdlines: CmdlineReader | Literal["shared", "inline"] = "shared",
    clock: Callable[[], float] = time.monotonic,
    kept: KeptSkims | None = None,
    read_probe: ReadProbe | None = None,
) -> Snapshot:
    """Scan the scope in one synchronous call (run it on a worker thread). Never raises for
    what it reads: every OSError of procfs or cgroupfs becomes a :class:`ScanProblem`.

    For a cgroup scope only its members are read; its direct children become cgroup records.
    ``read_scope_pressure`` stays False while an unprivileged trigger watches the scope group:
    reading its pressure file would starve that trigger (docs/design.md).

    ``plan`` (see :func:`pressured.scan.plan.plan_for`) lets the scan read full records only
    for the finalists of the chain's policies; without it every record is read, largest
    first. Command lines are read off this thread with a time limit, by ``cmdlines`` or by
    the process-wide :func:`~pressured.scan.cmdline.shared_reader`; ``"inline"`` reads them
    on this thread with no limit (only for tools that may block). ``kept`` keeps the skim's
    files open between scans (:mod:`pressured.scan.kept`). Past ``deadline_s`` the snapshot
    holds what was read (``complete`` False) and policies still rank it. ``read_probe``
    lets a family key measure storage reads where its ranking would fall back to size.
    """
    started_mono = time.monotonic_ns()
    started = time.perf_counter_ns()
    deadline = clock() + deadline_s
    problems: list[ScanProblem] = []
    cgroups: list[CgroupRecord] = []
    members: dict[int, str] | None = None
    try:
        memory: SystemMemory | None = SystemMemory.from_meminfo(procfs.read_meminfo(proc_root))
    except (OSError, ParseError) as exc:
        problems.append(ScanProblem(0, f"meminfo unreadable: {exc}"))
        memory = None
    if cgroup_path is not None and layout is not None:
        scope_group = Cgroup(layout, cgroup_path, memcg_v1_path)
        members, cgroups = _read_cgroups(scope_group, read_scope_pressure, problems)
    if members is None:
        try:
            pids = procfs.list_pids(proc_root)
        except OSError as exc:
            problems.append(ScanProblem(0, f"cannot list processes: {exc}"))
            pids = []
    else:
        pids = list(members)
    cgroups_read_ns = time.perf_counter_ns() - started
    self_pid = os.getpid()
    swap_in_use = memory.swap_total_bytes - memory.swap_free_bytes if memory else 0

    def candidate(record: ProcessRecord) -> bool:
        return is_candidate(record, self_pid) and (protection is None or protection(record) is None)

    def group_members(path: str) -> Iterator[int]:
        """PIDs in cgroup ``path`` and below, for the victim's leaf group check (none for the
        scope's own group, which family.expand never kills as a family)."""
        if path == cgroup_path:
            return
        if members is not None:
            yield from (pid for pid, where in members.items() if within(where, (path,)))
        elif layout is not None:
            try:
                yield from Cgroup(layout, path).member_paths(errors=[])
            except OSError:
                return
        else:
            # No cgroup mount known: ask each process (one small lock-free read) until the
            # caller has what it needs (it stops at the first outsider it can read).
            yield from (pid for pid in pids if within(procfs.cgroup_of(pid, proc_root), (path,)))

    scan = scan_two_phase(
        proc_root,
        pids,
        plan,
        candidate=candidate,
        swap_in_use=max(0, swap_in_use) if memory else 1 << 62,
        cgroups=members,
        cmdline_limit=cmdline_limit,
        deadline=deadline,
        cmdlines=(
            None
            if cmdlines == "inline"
            else shared_reader(proc_root)
            if cmdlines == "shared"
            else cmdlines
        ),
        clock=clock,
        skim=fresh_skim if kept is None else kept.skim,
        earlier=None if kept is None else kept.earlier_stat,
        omitted=tuple(g.path for g in cgroups[1:] if g.omit),
        group_members=group_members,
        read_probe=read_probe,
    )
    protected = frozenset(
        p.pid for p in scan.processes if protection is not None and protection(p) is not None
    )
    snapshot = Snapshot(
        scope=event.scope,
        event=event,
        processes=scan.processes,
        protected=protected,
        cgroups=tuple(cgroups),
        memory=memory,
        recent_kills=recent_kills,
        self_pid=self_pid,
        scan_duration_ns=time.perf_counter_ns() - started,
        complete=scan.complete,
        problems=(*problems, *scan.problems),
        expected_processes=len(pids),
        skimmed=scan.skimmed,
        full_scan=plan is None,
        previous=scan.previous,
        rates_sampled=scan.sampled_ns is not None,
        read_rates=scan.read_rates,
        taken_monotonic_ns=scan.sampled_ns or time.monotonic_ns(),
        scan_started_monotonic_ns=started_mono,
        cgroups_read_ns=cgroups_read_ns,
    )
    _log_shortfalls(snapshot)
    return snapshot


def _read_cgroups(
    scope_group: Cgroup, read_scope_pressure: bool, problems: list[ScanProblem]
) -> tuple[dict[int, str], list[CgroupRecord]]:
    """The scope's members (one walk) and its cgroup records; errors become problems."""
    walk_errors: list[tuple[str, OSError]] = []
    if not scope_group.directory.is_dir():
        problems.append(ScanProblem(0, f"cgroup {scope_group.path}: gone"))
        return {}, []
    members = scope_group.member_paths(errors=walk_errors)
    for directory, exc in walk_errors:
        problems.append(ScanProblem(0, f"cgroup {directory}: {exc.strerror or exc}"))
    cgroups: list[CgroupRecord] = []
    try:
        cgroups.append(
            read_cgroup_record(scope_group, with_pressure=read_scope_pressure, pids=tuple(members))
        )
        children = scope_group.children()
    except OSError as exc:
        problems.append(ScanProblem(0, f"cgroup {scope_group.path}: {exc.strerror or exc}"))
        children = []
    for child in children:
        try:
            # Its members come from the scope's one walk, not another walk of its own.
            prefix = child.path.rstrip("/") + "/"
            child_pids = tuple(
                pid
                for pid, path in members.items()
                if path == child.path or path.startswith(prefix)
            )
            cgroups.append(read_cgroup_record(child, pids=child_pids))
        except FileNotFoundError:
            continue  # removed mid-scan: not a problem
        except (OSError, ParseError) as exc:
            problems.append(ScanProblem(0, f"cgroup {child.path}: {exc}"))
    return members, cgroups


def _log_shortfalls(snapshot: Snapshot) -> None:
    if scan_is_empty(snapshot):
        log.error(
            "scan.empty",
            scope=snapshot.scope,
            expected=snapshot.expected_processes,
            duration_ms=round(snapshot.scan_duration_ns / 1e6, 3),
            detail="nothing was read of a scope that has members: the decision has no data "
            "(not the same as no candidate)",
        )
    elif not snapshot.complete:
        log.warning(
            "scan.partial",
            scope=snapshot.scope,
            read=snapshot.read_processes,
            full_records=len(snapshot.processes),
            expected=snapshot.expected_processes,
            duration_ms=round(snapshot.scan_duration_ns / 1e6, 3),
        )
