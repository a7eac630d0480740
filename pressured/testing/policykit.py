"""The policy test kit: build snapshots by hand, run a policy on them, assert on the decision.

No root, no cgroups, no real pressure: everything here makes plain immutable records, so a
plugin author can test a ranking in a few lines::

    from pressured.testing import assert_kills, make_process, make_snapshot, run_policy

    def test_biggest_java_dies() -> None:
        snapshot = make_snapshot(
            processes=[
                make_process(10, comm="java", rss_mib=900),
                make_process(11, comm="java", rss_mib=300),
                make_process(12, comm="bash", rss_mib=2000),
            ]
        )
        decision = run_policy(KillByName, snapshot, names=["java"])
        assert_kills(decision, pid=10)

Defaults are chosen to look like a real host: ``oom_score`` follows the kernel's formula from
RSS + swap and ``oom_score_adj`` on a 16 GiB machine; every process gets a distinct start
time; the daemon's own PID (``snapshot.self_pid``) is one no hand-made process uses.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from pressured.config import GuardSettings
from pressured.events import EventSource, PressureEvent, VictimKind
from pressured.guard import Guard
from pressured.kernel.cgroupfs import UNLIMITED, MemoryFigures
from pressured.kernel.procfs import ProcessRecord
from pressured.kernel.psi import Pressure, PressureLine
from pressured.policies.base import Decision, Policy, Victim
from pressured.policies.chain import ChainLink, ChainResult, PolicyChain, malformed
from pressured.policies.registry import IMPORT_STRING, PolicySource, check_contract
from pressured.snapshot import CgroupRecord, ProcessSample, RecentKill, Snapshot, SystemMemory

MIB = 2**20
SELF_PID = 4_000_000
"""The daemon's PID in hand-made snapshots: above any PID a test is likely to pick."""
DEFAULT_TOTAL_MIB = 16 * 1024
OOM_SCORE_ADJ_MIN = -1000


def kernel_oom_score(memory_mib: float, adj: int, total_mib: float = DEFAULT_TOTAL_MIB) -> int:
    """``/proc/<pid>/oom_score`` as the kernel computes it (fs/proc/base.c, Linux >= 5.9):
    ``(1000 + badness * 1000 / total) * 2 / 3`` with ``badness = memory + adj * total / 1000``
    (in pages); 0 for ``adj = -1000``. A small process with adj 0 scores 666."""
    if adj <= OOM_SCORE_ADJ_MIN:
        return 0
    badness = memory_mib + adj * total_mib / 1000
    return max(0, int((1000 + badness * 1000 / total_mib) * 2 / 3))


def make_process(
    pid: int,
    *,
    comm: str = "worker",
    cmdline: str | None = None,
    rss_mib: float = 10.0,
    swap_mib: float = 0.0,
    oom_score: int | None = None,
    adj: int = 0,
    cgroup: str | None = "/",
    uid: int = 1000,
    ppid: int = 1,
    start_time: int | None = None,
    state: str = "S",
    kernel_thread: bool = False,
    pgid: int | None = None,
    minflt: int = 0,
    majflt: int = 0,
) -> ProcessRecord:
    """One process record. ``oom_score`` defaults to the kernel's formula (see
    :func:`kernel_oom_score`); ``start_time`` defaults to ``pid * 100`` (higher PID = younger);
    ``cmdline`` defaults to ``comm`` (empty for a kernel thread); ``pgid`` (and the session)
    defaults to ``pid``: every process leads its own process group unless told otherwise."""
    memory_mib = rss_mib + swap_mib
    return ProcessRecord(
        pid=pid,
        ppid=0 if kernel_thread else ppid,
        start_time=pid * 100 if start_time is None else start_time,
        comm=comm,
        cmdline=("" if kernel_thread else comm) if cmdline is None else cmdline,
        cmdline_truncated=False,
        uid=0 if kernel_thread else uid,
        state=state,
        rss_bytes=int(rss_mib * MIB),
        swap_bytes=int(swap_mib * MIB),
        oom_score=kernel_oom_score(memory_mib, adj) if oom_score is None else oom_score,
        oom_score_adj=adj,
        cgroup=cgroup,
        is_kernel_thread=kernel_thread,
        pgid=pid if pgid is None else pgid,
        sid=pid if pgid is None else pgid,
        minflt=minflt,
        majflt=majflt,
    )


def make_pressure(
    *,
    some_avg10: float = 0.0,
    some_avg60: float = 0.0,
    some_avg300: float = 0.0,
    some_total_us: int = 0,
    full_avg10: float | None = None,
    full_avg60: float = 0.0,
    full_avg300: float = 0.0,
    full_total_us: int = 0,
) -> Pressure:
    """A pressure file's figures. The ``full`` line exists only when ``full_avg10`` is given."""
    full = None
    if full_avg10 is not None:
        full = PressureLine(full_avg10, full_avg60, full_avg300, full_total_us)
    return Pressure(PressureLine(some_avg10, some_avg60, some_avg300, some_total_us), full)


def make_cgroup(
    path: str,
    *,
    usage_mib: float = 0.0,
    limit_mib: float | None = None,
    swap_mib: float = 0.0,
    low_mib: float = 0.0,
    min_mib: float = 0.0,
    pressure_some_avg10: float = 0.0,
    pressure_some_avg60: float = 0.0,
    pressure_some_total_us: int = 0,
    pressure_full_avg10: float | None = None,
    pressure_full_avg60: float = 0.0,
    pressure_full_total_us: int = 0,
    reclaim_pages: int = 0,
    pids: Sequence[int] = (),
    prefer: bool = False,
    avoid: bool = False,
    with_pressure: bool = True,
) -> CgroupRecord:
    """One cgroup record. Without ``pids``, :func:`make_snapshot` fills them from the
    processes whose ``cgroup`` is this path or below it (groups without members are never
    chosen by the cgroup built-ins). The pressure ``full`` line exists only when
    ``pressure_full_avg10`` is given; policies that read "full" then use "some"."""
    memory = MemoryFigures(
        current_bytes=int(usage_mib * MIB),
        limit_bytes=UNLIMITED if limit_mib is None else int(limit_mib * MIB),
        swap_bytes=int(swap_mib * MIB),
        low_bytes=int(low_mib * MIB),
        min_bytes=int(min_mib * MIB),
        source="v2",
    )
    pressure = None
    if with_pressure:
        pressure = make_pressure(
            some_avg10=pressure_some_avg10,
            some_avg60=pressure_some_avg60,
            some_total_us=pressure_some_total_us,
            full_avg10=pressure_full_avg10,
            full_avg60=pressure_full_avg60,
            full_total_us=pressure_full_total_us,
        )
    return CgroupRecord(
        path=path,
        memory=memory,
        pressure=pressure,
        pids=tuple(pids),
        reclaim_pages=reclaim_pages,
        prefer=prefer,
        avoid=avoid,
    )


def _within(path: str | None, root: str) -> bool:
    if path is None:
        return False
    return root in ("/", path) or path.startswith(root.rstrip("/") + "/")


def _with_members(group: CgroupRecord, processes: Sequence[ProcessRecord]) -> CgroupRecord:
    if group.pids:
        return group
    members = tuple(p.pid for p in processes if _within(p.cgroup, group.path))
    return replace(group, pids=members) if members else group


def _scope_group(cgroups: Sequence[CgroupRecord], scope: str | None) -> CgroupRecord | None:
    """The scope record to put first, or None when ``cgroups[0]`` already is the scope."""
    first = cgroups[0].path
    rest = [g.path for g in cgroups[1:]]
    if scope is None and rest and all(posixpath.dirname(p) == first for p in rest):
        return None
    if scope is not None and first == scope:
        return None
    parent = scope or posixpath.commonpath([posixpath.dirname(g.path) for g in cgroups])
    return make_cgroup(
        parent, usage_mib=sum(g.usage_bytes for g in cgroups) / MIB, with_pressure=False
    )


def make_snapshot(
    processes: Iterable[ProcessRecord] = (),
    cgroups: Iterable[CgroupRecord] = (),
    *,
    level: str = "some",
    scope: str | None = None,
    event: PressureEvent | None = None,
    mem_total_mib: float = DEFAULT_TOTAL_MIB,
    mem_available_mib: float | None = None,
    swap_total_mib: float | None = None,
    swap_free_percent: float | None = None,
    recent_kills: Sequence[RecentKill] = (),
    self_pid: int = SELF_PID,
    at_s: float = 0.0,
    previous: Iterable[ProcessRecord] = (),
    previous_at_s: float | None = None,
) -> Snapshot:
    """A snapshot as the controller would hand it to the policy chain.

    * ``cgroups``: pass the scope's child groups; the scope group itself (which real
      snapshots put first) is made for you at their common parent, or at ``scope``. Pass it
      yourself first if you want to set its figures.
    * ``scope`` defaults to that cgroup path, or ``"system"`` without cgroups.
    * Swap: ``swap_free_percent`` alone implies 1 GiB of swap; neither means no swap at all.
    * ``at_s``: the monotonic time the snapshot was taken, for policies that keep history
      across calls (make successive snapshots with growing ``at_s``, no sleeping).
    * ``previous``: the same processes as an earlier sample saw them (RSS, faults), taken at
      ``previous_at_s`` (default: 1 s before ``at_s``): growth and fault rates come from them.
    """
    earlier_ns = int(((at_s - 1.0) if previous_at_s is None else previous_at_s) * 1e9)
    samples = {
        p.identity: ProcessSample(p.rss_bytes, p.minflt, p.majflt, earlier_ns) for p in previous
    }
    procs = tuple(processes)
    groups = list(cgroups)
    if groups:
        head = _scope_group(groups, scope)
        if head is not None:
            groups.insert(0, head)
        scope = scope or groups[0].path
    else:
        scope = scope or "system"
    groups = [_with_members(g, procs) for g in groups]
    if swap_total_mib is None:
        swap_total_mib = 1024.0 if swap_free_percent is not None else 0.0
    free_share = 100.0 if swap_free_percent is None else swap_free_percent
    total = int(mem_total_mib * MIB)
    used = sum(p.rss_bytes for p in procs)
    memory = SystemMemory(
        total_bytes=total,
        available_bytes=max(0, total - used)
        if mem_available_mib is None
        else int(mem_available_mib * MIB),
        swap_total_bytes=int(swap_total_mib * MIB),
        swap_free_bytes=int(swap_total_mib * MIB * free_share / 100),
    )
    return Snapshot(
        scope=scope,
        event=event or PressureEvent(scope=scope, level=level, source=EventSource.MANUAL),
        processes=procs,
        cgroups=tuple(groups),
        memory=memory,
        recent_kills=tuple(recent_kills),
        self_pid=self_pid,
        taken_monotonic_ns=int(at_s * 1e9),
        previous=samples,
    )


def make_policy(policy_class: type[Any], **options: Any) -> Policy:
    """Validate ``options`` with the class's ``Options`` model and construct the policy, as the
    registry does (so contract mistakes show here too). Keep the instance to run it on several
    snapshots when the policy remembers things across calls."""
    check_contract(policy_class, policy_class.__qualname__)
    policy: Policy = policy_class(policy_class.Options.model_validate(options))
    return policy


def _checked(decision: object, label: str) -> Decision:
    problem = malformed(decision)
    if problem is not None:
        raise AssertionError(f"{label} returned a malformed decision: {problem}")
    assert isinstance(decision, Decision)  # noqa: S101 - narrowed by malformed() above
    return decision


async def run_policy_async(
    policy_or_class: Policy | type[Any], snapshot: Snapshot, **options: Any
) -> Decision:
    """:func:`run_policy` for tests that already run inside an event loop."""
    policy: Policy
    if isinstance(policy_or_class, type):
        policy = make_policy(policy_or_class, **options)
    elif options:
        raise TypeError("options are given to a policy class, not to an instance")
    else:
        policy = policy_or_class
    return _checked(await policy(snapshot), type(policy).__name__)


def run_policy(policy_or_class: Policy | type[Any], snapshot: Snapshot, **options: Any) -> Decision:
    """Run one policy on ``snapshot`` and return its (checked) decision.

    Give a class and its options as keywords (``run_policy(Largest, snap, min_mib=10)``), or
    an instance you keep across calls. A malformed decision raises AssertionError saying what
    is wrong with it, as the chain would count it as a failure.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "run_policy() cannot run inside a running event loop: "
            "use 'await run_policy_async(...)' there"
        )
    return asyncio.run(run_policy_async(policy_or_class, snapshot, **options))


def run_chain(
    snapshot: Snapshot,
    *policies: Policy,
    guard: GuardSettings | None = None,
    timeout_s: float = 1.0,
) -> ChainResult:
    """Run policies as a chain behind the real guard (default :class:`GuardSettings`) and
    return the :class:`~pressured.policies.chain.ChainResult`: what the daemon would do."""
    links = []
    for policy in policies:
        name = getattr(policy, "name", "") or type(policy).__name__
        links.append(ChainLink(policy, PolicySource(name, type(policy), IMPORT_STRING), timeout_s))
    checker = Guard(guard or GuardSettings(), self_pid=snapshot.self_pid)
    return asyncio.run(PolicyChain(links).decide(snapshot, checker.check))


def _describe(decision: Decision) -> str:
    victims = ", ".join(v.describe() for v in decision.victims) or "none"
    ranking = ", ".join(f"{target}={score}" for target, score in decision.ranking) or "-"
    return f"victims: {victims}; reason: {decision.reason!r}; ranking: {ranking}"


def assert_kills(
    decision: Decision, *, pid: int | None = None, cgroup: str | None = None
) -> Victim:
    """Assert the decision's first victim is process ``pid`` or cgroup ``cgroup``; return it."""
    if (pid is None) == (cgroup is None):
        raise TypeError("give exactly one of pid= or cgroup=")
    if not decision.victims:
        raise AssertionError(f"expected a kill, got no action ({_describe(decision)})")
    victim = decision.victims[0]
    if pid is not None and (victim.kind is not VictimKind.PROCESS or victim.pid != pid):
        raise AssertionError(f"expected pid {pid} to die, got {_describe(decision)}")
    if cgroup is not None and (victim.kind is not VictimKind.CGROUP or victim.cgroup != cgroup):
        raise AssertionError(f"expected cgroup {cgroup} to die, got {_describe(decision)}")
    return victim


def assert_no_action(decision: Decision) -> None:
    """Assert the decision kills nothing."""
    if decision.victims:
        raise AssertionError(f"expected no action, got {_describe(decision)}")
