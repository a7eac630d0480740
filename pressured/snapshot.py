"""The immutable picture of a scope that policies decide on, and the code that takes it.

``take_snapshot`` is synchronous and reads procfs and cgroupfs: the controller runs it on its
I/O worker thread in one hop. Policies only ever see the resulting :class:`Snapshot`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pressured.errors import KernelError, ParseError
from pressured.events import PressureEvent
from pressured.kernel import procfs
from pressured.kernel.cgroupfs import Cgroup, CgroupLayout, MemoryFigures
from pressured.kernel.procfs import ProcessRecord, ScanProblem
from pressured.kernel.psi import Pressure


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
class ProcessSample:
    """An earlier cheap reading of one process (keyed by its identity), for growth figures."""

    rss_bytes: int
    minflt: int
    majflt: int
    monotonic_ns: int


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
            if not p.is_kernel_thread
            and p.state != "Z"  # a zombie's memory is already gone: killing it frees nothing
            and p.pid not in (1, self.self_pid)
            and p.pid not in self.protected
        )


_XATTR_PREFER = ("trusted.oomd_prefer", "user.oomd_prefer")
_XATTR_AVOID = ("trusted.oomd_avoid", "user.oomd_avoid")
_XATTR_OMIT = ("trusted.oomd_omit", "user.oomd_omit")


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
        prefer=any(name in xattrs for name in _XATTR_PREFER),
        avoid=any(name in xattrs for name in _XATTR_AVOID),
        omit=any(name in xattrs for name in _XATTR_OMIT),
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
) -> Snapshot:
    """Scan the scope in one synchronous call (run it on a worker thread).

    For a cgroup scope only its members are read; its direct children become cgroup records.
    ``read_scope_pressure`` stays False while an unprivileged trigger watches the scope group:
    reading its pressure file would starve that trigger (DESIGN.md).
    """
    started = time.perf_counter_ns()
    deadline = time.monotonic() + deadline_s
    cgroups: list[CgroupRecord] = []
    members: dict[int, str] | None = None
    if cgroup_path is not None and layout is not None:
        scope_group = Cgroup(layout, cgroup_path, memcg_v1_path)
        members = scope_group.member_paths()
        cgroups.append(
            read_cgroup_record(scope_group, with_pressure=read_scope_pressure, pids=tuple(members))
        )
        try:
            children = scope_group.children()
        except OSError:
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
            except (FileNotFoundError, ParseError):
                continue  # removed mid-scan, or a malformed file: leave it out
    scan = procfs.scan_processes(
        proc_root,
        None if members is None else list(members),
        cmdline_limit=cmdline_limit,
        deadline=deadline,
        cgroups=members,
    )
    try:
        memory: SystemMemory | None = SystemMemory.from_meminfo(procfs.read_meminfo(proc_root))
    except OSError:
        memory = None
    protected = frozenset(
        p.pid for p in scan.processes if protection is not None and protection(p) is not None
    )
    return Snapshot(
        scope=event.scope,
        event=event,
        processes=scan.processes,
        protected=protected,
        cgroups=tuple(cgroups),
        memory=memory,
        recent_kills=recent_kills,
        scan_duration_ns=time.perf_counter_ns() - started,
        complete=scan.complete,
        problems=scan.problems,
    )
