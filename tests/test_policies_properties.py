"""Property tests over generated snapshots: whatever the policies (built-in or hostile) return,
no forbidden victim gets past the guard through ``PolicyChain.decide``."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pressured.config import GuardSettings
from pressured.events import VictimKind
from pressured.guard import Guard
from pressured.kernel.procfs import ProcessRecord
from pressured.policies.base import BasePolicy, Decision, NoOptions, Policy, Victim
from pressured.policies.chain import ChainLink, PolicyChain, malformed
from pressured.policies.registry import IMPORT_STRING, PolicySource, builtin_policies
from pressured.snapshot import CgroupRecord, Snapshot
from pressured.testing import make_cgroup, make_policy, make_process, make_snapshot

SELF = 4242
SCOPE = "/jobs"
CHILDREN = ("/jobs/a", "/jobs/b", "/jobs/c")
PROTECTED_CGROUP = "/jobs/c"
PROTECTED_UID = 65534
GUARD = GuardSettings(protect_uids=(PROTECTED_UID,), protect_cgroups=(PROTECTED_CGROUP,))
NAMES = ("worker", "java", "sshd", "systemd", "pressured", "postgres", "kthreadd")

processes = st.builds(
    lambda pid, comm, rss, swap, adj, score, cgroup, uid, kthread, start: make_process(
        pid,
        comm=comm,
        rss_mib=rss,
        swap_mib=swap,
        adj=adj,
        oom_score=score,
        cgroup=cgroup,
        uid=uid,
        kernel_thread=kthread,
        start_time=start,
    ),
    pid=st.sampled_from([1, 2, SELF]) | st.integers(3, 60),
    comm=st.sampled_from(NAMES),
    rss=st.floats(0, 4096),
    swap=st.sampled_from([0.0, 0.0, 10.0, 900.0]),
    adj=st.sampled_from([-1000, -999, 0, 300, 900, 1000]) | st.integers(-1000, 1000),
    score=st.none() | st.integers(0, 2000),
    cgroup=st.sampled_from([*CHILDREN, "/jobs/a/x", SCOPE, "/"]),
    uid=st.sampled_from([0, 1000, PROTECTED_UID]),
    kthread=st.booleans(),
    start=st.none() | st.integers(0, 10**6),
)


def _unique(records: list[ProcessRecord]) -> list[ProcessRecord]:
    seen: dict[int, ProcessRecord] = {}
    for record in records:
        seen.setdefault(record.pid, record)
    return list(seen.values())


cgroups = st.builds(
    lambda usage, low, avg10, avg60, reclaim, prefer, avoid: (
        usage,
        low,
        avg10,
        avg60,
        reclaim,
        prefer,
        avoid,
    ),
    usage=st.floats(0, 4096),
    low=st.sampled_from([0.0, 100.0, 5000.0]),
    avg10=st.floats(0, 100),
    avg60=st.floats(0, 100),
    reclaim=st.integers(0, 10**6),
    prefer=st.booleans(),
    avoid=st.booleans(),
)


def _groups(figures: list[tuple[Any, ...]]) -> list[CgroupRecord]:
    groups = []
    for path, (usage, low, avg10, avg60, reclaim, prefer, avoid) in zip(
        CHILDREN, figures, strict=False
    ):
        groups.append(
            make_cgroup(
                path,
                usage_mib=usage,
                low_mib=low,
                pressure_some_avg10=avg10,
                pressure_full_avg10=avg10,
                pressure_full_avg60=avg60,
                reclaim_pages=reclaim,
                prefer=prefer,
                avoid=avoid,
            )
        )
    return groups


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    procs = _unique(draw(st.lists(processes, max_size=25)))
    groups = _groups(draw(st.lists(cgroups, min_size=0, max_size=3)))
    return make_snapshot(
        processes=procs,
        cgroups=groups,
        scope=SCOPE,
        level=draw(st.sampled_from(["some", "full", "memory"])),
        swap_free_percent=draw(st.none() | st.floats(0, 100)),
        self_pid=SELF,
    )


@st.composite
def hostile_victims(draw: st.DrawFn, snapshot: Snapshot) -> list[object]:
    """Victims a hostile plugin might return: forbidden, made-up, stale, garbage."""
    known = [p.pid for p in snapshot.processes]
    pid = draw(st.sampled_from([1, SELF, 99_999, *known]) | st.integers(-5, 100))
    record = snapshot.process(pid)
    start = draw(
        st.sampled_from(
            [None, record.start_time if record else 0, (record.start_time + 1) if record else 7]
        )
    )
    process = Victim(VictimKind.PROCESS, "hostile", pid=pid, start_time=start)
    group = Victim(
        VictimKind.CGROUP,
        "hostile",
        cgroup=draw(st.sampled_from(["/", SCOPE, *CHILDREN, "/elsewhere", ""])),
    )
    garbage = draw(st.sampled_from([None, "1", 1, Victim(VictimKind.PROCESS, "x", pid=None)]))
    return draw(st.lists(st.sampled_from([process, group, garbage]), min_size=1, max_size=3))


class Hostile(BasePolicy[NoOptions]):
    """Returns whatever victims it was handed, wrapped in a Decision."""

    name: ClassVar[str] = "hostile"

    def __init__(self, victims: list[object]) -> None:
        super().__init__(NoOptions())
        self.victims = victims

    async def __call__(self, snapshot: Snapshot) -> Decision:
        return Decision(victims=tuple(self.victims), reason="hostile")  # type: ignore[arg-type]


def _builtins() -> list[Policy]:
    policies = []
    for name, cls in builtin_policies().items():
        options: dict[str, Any] = {"require_reclaim": False} if name == "cgroup_pressure" else {}
        policies.append(make_policy(cls, **options))
    return policies


def _chain(policies: list[Policy]) -> PolicyChain:
    return PolicyChain(
        [
            ChainLink(p, PolicySource(getattr(p, "name", "x"), type(p), IMPORT_STRING), 1.0)
            for p in policies
        ]
    )


def forbidden(victim: Victim, snapshot: Snapshot) -> str | None:
    """An oracle written apart from the guard: why this victim must never be killed."""

    def process_problem(record: ProcessRecord) -> str | None:
        if record.pid in (1, SELF):
            return "pid 1 or self"
        if record.is_kernel_thread:
            return "kernel thread"
        if record.oom_score_adj == -1000:
            return "adj -1000"
        if record.comm in GUARD.protect_names:
            return "protected name"
        if record.uid == PROTECTED_UID:
            return "protected uid"
        if record.cgroup and (
            record.cgroup == PROTECTED_CGROUP or record.cgroup.startswith(PROTECTED_CGROUP + "/")
        ):
            return "protected cgroup"
        return None

    if victim.kind is VictimKind.CGROUP:
        group = snapshot.cgroup(victim.cgroup or "")
        if group is None or victim.cgroup in ("/", PROTECTED_CGROUP):
            return "bad or protected cgroup"
        for pid in group.pids:
            member = snapshot.process(pid)
            if pid in (1, SELF) or (member is not None and process_problem(member)):
                return f"protected member {pid}"
        return None
    record = snapshot.process(victim.pid or -1)
    if record is None:
        return "not in snapshot"
    if victim.start_time is not None and victim.start_time != record.start_time:
        return "stale identity"
    return process_problem(record)


def _decide(chain: PolicyChain, snapshot: Snapshot) -> Any:
    guard = Guard(GUARD, self_pid=SELF)
    return asyncio.run(chain.decide(snapshot, guard.check))


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(data=st.data(), snapshot=snapshots())
def test_no_forbidden_victim_passes_the_chain(data: st.DataObject, snapshot: Snapshot) -> None:
    """A hostile plugin first, built-ins after: every accepted victim is allowed."""
    victims = data.draw(hostile_victims(snapshot))
    builtins = _builtins()
    order = data.draw(st.permutations(builtins))
    position = data.draw(st.integers(0, len(order)))
    policies: list[Policy] = list(order)
    policies.insert(position, Hostile(victims))
    result = _decide(_chain(policies), snapshot)
    for victim in result.decision.victims:
        assert forbidden(victim, snapshot) is None, (victim, result.decision)


@PROPERTY
@given(snapshot=snapshots())
def test_builtins_answer_well_formed_decisions(snapshot: Snapshot) -> None:
    """Every built-in answers a well-formed Decision on any snapshot, never raising."""
    for policy in _builtins():
        decision = asyncio.run(policy(snapshot))
        assert malformed(decision) is None


@PROPERTY
@given(snapshot=snapshots())
def test_builtin_process_victims_are_never_never_kill(snapshot: Snapshot) -> None:
    """Even before the guard, built-ins never pick PID 1, self, kernel threads or adj -1000."""
    for policy in _builtins():
        decision = asyncio.run(policy(snapshot))
        for victim in decision.victims:
            if victim.kind is VictimKind.PROCESS:
                record = snapshot.process(victim.pid or -1)
                assert record is not None
                assert record.pid not in (1, SELF)
                assert not record.is_kernel_thread
                assert record.oom_score_adj > -1000
            else:
                assert victim.cgroup in CHILDREN


@PROPERTY
@given(snapshot=snapshots())
def test_chain_of_builtins_stays_within_the_rules(snapshot: Snapshot) -> None:
    """The built-ins alone, behind the guard, only ever yield allowed victims."""
    result = _decide(_chain(_builtins()), snapshot)
    assert not result.failures
    for victim in result.decision.victims:
        assert forbidden(victim, snapshot) is None
