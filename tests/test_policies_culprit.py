"""``culprit``: the family faulting or growing fastest dies; size only when nobody is."""

from __future__ import annotations

import dataclasses

from pressured.events import VictimKind
from pressured.family import expand, family_roots
from pressured.kernel.procfs import PAGE_SIZE, ProcessRecord
from pressured.policies.base import Victim
from pressured.policies.chain import ChainLink, PolicyChain
from pressured.policies.culprit import CulpritPolicy
from pressured.policies.oom_score import OomScorePolicy
from pressured.policies.registry import BUILTIN, PolicySource
from pressured.snapshot import CgroupRecord
from pressured.testing import assert_kills, make_cgroup, make_process, make_snapshot, run_policy

MIB = 2**20


def grown(record: ProcessRecord, *, mib: float = 0, faults: int = 0) -> ProcessRecord:
    """The same process one second later, ``mib`` larger, ``faults`` minor faults more."""
    return dataclasses.replace(
        record, rss_bytes=record.rss_bytes + int(mib * MIB), minflt=record.minflt + faults
    )


def test_grower_dies_before_the_bigger_idle_process() -> None:
    """A 380 MiB idle process beside a 120 MiB one growing 30 MiB/s: the grower dies
    (oom_score, for the record, takes the idle one)."""
    idle = make_process(10, comm="idle", rss_mib=380)
    grower = make_process(11, comm="grower", rss_mib=120)
    snapshot = make_snapshot([idle, grown(grower, mib=30)], previous=[idle, grower], at_s=10)
    decision = run_policy(CulpritPolicy, snapshot)
    assert_kills(decision, pid=11)
    assert decision.victims[0].figures["rule"] == "demand"
    assert_kills(run_policy(OomScorePolicy, snapshot), pid=10)


def test_thrasher_found_by_its_faults_though_it_does_not_grow() -> None:
    """A page-cache thrasher keeps its size but faults thousands of pages a second."""
    big = make_process(20, comm="db", rss_mib=500)
    thrasher = make_process(21, comm="sshd", rss_mib=40)
    snapshot = make_snapshot([big, grown(thrasher, faults=8000)], previous=[big, thrasher], at_s=5)
    decision = run_policy(CulpritPolicy, snapshot)
    assert_kills(decision, pid=21)
    assert decision.victims[0].figures["fault_bytes_per_s"] == 8000 * PAGE_SIZE


def test_without_history_the_largest_family_dies_and_says_why() -> None:
    """No earlier sample: demand is unknown, the largest dies, the reason says so."""
    snapshot = make_snapshot([make_process(30, rss_mib=50), make_process(31, rss_mib=90)])
    decision = run_policy(CulpritPolicy, snapshot)
    assert_kills(decision, pid=31)
    assert decision.victims[0].figures["rule"] == "size"
    assert "no earlier sample" in str(decision.ranking[0][1])


def test_demand_below_the_floor_falls_back_to_size() -> None:
    """A process touching a few pages a second is no culprit: size decides."""
    small = make_process(40, rss_mib=20)
    large = make_process(41, rss_mib=200)
    snapshot = make_snapshot([grown(small, faults=50), large], previous=[small, large], at_s=3)
    assert_kills(run_policy(CulpritPolicy, snapshot), pid=41)


def test_forking_hog_is_one_family_and_outranks_a_single_bigger_process() -> None:
    """Parent + 8 children in one process group sum their demand; the parent is the victim."""
    parent = make_process(100, comm="hog", rss_mib=5)
    children = [make_process(101 + i, comm="hog", rss_mib=30, ppid=100, pgid=100) for i in range(8)]
    single = make_process(200, comm="single", rss_mib=100)
    now = [parent, *(grown(c, faults=500) for c in children), grown(single, faults=1500)]
    snapshot = make_snapshot(now, previous=[parent, *children, single], at_s=2)
    decision = run_policy(CulpritPolicy, snapshot)
    assert_kills(decision, pid=100)
    assert decision.victims[0].figures["members"] == 9
    assert decision.ranking[0][0] == "100 hog +8"


def test_ranking_carries_every_candidates_figures() -> None:
    """Each ranking entry states demand, faults, growth, majflt, size and members."""
    a = make_process(50, comm="a", rss_mib=10)
    b = make_process(51, comm="b", rss_mib=20)
    snapshot = make_snapshot([grown(a, faults=1000), b], previous=[a, b], at_s=4)
    ranking = run_policy(CulpritPolicy, snapshot).ranking
    assert [label for label, _ in ranking] == ["50 a", "51 b"]
    for _, evidence in ranking:
        for word in ("demand", "faults", "growth", "majflt", "size", "process(es)"):
            assert word in str(evidence)


def test_oom_score_adj_does_not_hide_the_culprit() -> None:
    """A thrasher with a low adj still dies before an idle bystander with a high one."""
    bystander = make_process(60, rss_mib=10, adj=800)
    hog = make_process(61, rss_mib=60, adj=-500)
    snapshot = make_snapshot([bystander, grown(hog, faults=5000)], previous=[bystander, hog])
    assert_kills(run_policy(CulpritPolicy, snapshot), pid=61)
    assert_kills(run_policy(OomScorePolicy, snapshot), pid=60)


def test_processes_in_an_oomd_omit_group_are_never_ranked() -> None:
    """user.oomd_omit on a child group keeps its processes out of the culprit's choice."""
    inside = make_process(70, rss_mib=300, cgroup="/jobs/keep")
    outside = make_process(71, rss_mib=10, cgroup="/jobs/other")
    keep = dataclasses.replace(make_cgroup("/jobs/keep", usage_mib=300), omit=True)
    other = make_cgroup("/jobs/other", usage_mib=10)
    snapshot = make_snapshot(
        [grown(inside, faults=9000), outside], [keep, other], previous=[inside, outside]
    )
    assert_kills(run_policy(CulpritPolicy, snapshot), pid=71)


def test_families_off_judges_single_processes() -> None:
    """families = false: each process on its own (the single big faulter wins)."""
    parent = make_process(100, rss_mib=5)
    kids = [make_process(101 + i, rss_mib=5, ppid=100, pgid=100) for i in range(4)]
    single = make_process(200, rss_mib=5)
    now = [parent, *(grown(k, faults=400) for k in kids), grown(single, faults=1000)]
    snapshot = make_snapshot(now, previous=[parent, *kids, single])
    assert_kills(run_policy(CulpritPolicy, snapshot, families=False), pid=200)
    assert_kills(run_policy(CulpritPolicy, snapshot), pid=100)


# -- families ----------------------------------------------------------------------------------


def test_family_stops_at_another_process_group() -> None:
    """A descendant that left the process group (its own job) is not family."""
    shell = make_process(10, rss_mib=5)
    job = make_process(11, rss_mib=5, ppid=10, pgid=11)
    worker = make_process(12, rss_mib=5, ppid=10, pgid=10)
    roots = family_roots([shell, job, worker])
    families = {root.pid: [m.pid for m in rest] for root, rest in roots}
    assert families == {10: [12], 11: []}


def test_expand_lists_descendants_when_the_leaf_group_holds_others() -> None:
    """In a shared group the victim keeps its pid and names its family by identity."""
    parent = make_process(10, cgroup="/jobs")
    kids = [make_process(11 + i, ppid=10, pgid=10, cgroup="/jobs") for i in range(3)]
    bystander = make_process(20, cgroup="/jobs")
    snapshot = make_snapshot([parent, *kids, bystander], [make_cgroup("/jobs")])
    victim = run_policy(CulpritPolicy, snapshot).victims[0]
    expanded = expand(victim, snapshot)
    assert expanded.kind is VictimKind.PROCESS and expanded.pid == 10
    assert set(expanded.family) == {k.identity for k in kids}
    assert "family of 3" in expanded.reason


def test_expand_turns_a_group_of_just_the_family_into_a_cgroup_victim() -> None:
    """A child group holding exactly the victim and its descendants dies by cgroup.kill."""
    parent = make_process(10, cgroup="/jobs/hog")
    kids = [make_process(11 + i, ppid=10, pgid=10, cgroup="/jobs/hog") for i in range(3)]
    other = make_process(20, cgroup="/jobs/web")
    groups = [make_cgroup("/jobs/hog"), make_cgroup("/jobs/web")]
    snapshot = make_snapshot([parent, *kids, other], groups, scope="/jobs")
    victim = run_policy(CulpritPolicy, snapshot).victims[0]
    expanded = expand(victim, snapshot)
    assert expanded.kind is VictimKind.CGROUP and expanded.cgroup == "/jobs/hog"
    assert "whole cgroup /jobs/hog" in expanded.reason


def test_expand_never_takes_a_protected_descendant() -> None:
    """A protected child (and what is below it) stays out of the family."""
    parent = make_process(10)
    guarded = make_process(11, ppid=10, pgid=10)
    below = make_process(12, ppid=11, pgid=10)
    kid = make_process(13, ppid=10, pgid=10)
    snapshot = dataclasses.replace(
        make_snapshot([parent, guarded, below, kid]), protected=frozenset({11})
    )
    victim = run_policy(CulpritPolicy, snapshot).victims[0]
    assert [pid for pid, _ in expand(victim, snapshot).family] == [13]


def _families(records: list[ProcessRecord]) -> dict[int, list[int]]:
    return {root.pid: sorted(m.pid for m in rest) for root, rest in family_roots(records)}


def test_an_orphan_in_a_loops_process_group_is_the_loops_family() -> None:
    """A loop starting thrashers that orphan themselves (``(cmd &)``, a double fork: reparented
    to PID 1, still in the loop's process group): the group's leader adopts them, so the
    loop is the culprit and one kill ends it. It used to be a family of its own, and each kill
    took one thrasher while the loop started the next (a real-kernel scenario:
    tests/test_scenarios.py::test_a_loop_of_orphaned_thrashers_dies_with_the_loop)."""
    loop = make_process(10, comm="sh", rss_mib=2)
    orphan = make_process(11, comm="thrash", ppid=1, pgid=10, rss_mib=40)
    bystander = make_process(20, rss_mib=60)
    assert _families([loop, orphan, bystander]) == {10: [11], 20: []}
    snapshot = make_snapshot(
        [loop, grown(orphan, faults=9000), bystander], previous=[loop, orphan, bystander], at_s=1
    )
    decision = run_policy(CulpritPolicy, snapshot)
    assert_kills(decision, pid=10)
    assert [pid for pid, _ in expand(decision.victims[0], snapshot).family] == [11]


def test_a_pipelines_later_command_is_adopted_by_the_job_leader() -> None:
    """``a | b`` from a shell: both are the shell's children in the job's group (led by a);
    b has no parent in the group, so a, the leader, adopts it."""
    shell = make_process(5, comm="sh")
    first = make_process(10, ppid=5, pgid=10)
    second = make_process(11, ppid=5, pgid=10)
    assert _families([shell, first, second]) == {5: [], 10: [11]}


def test_a_child_of_a_protected_group_member_is_not_adopted() -> None:
    """Adoption is for members with no parent in the group: one whose parent is there but
    protected stays out of the family, as before (the parent is present, not gone)."""
    leader = make_process(10)
    guarded = make_process(11, ppid=10, pgid=10)
    below = make_process(12, ppid=11, pgid=10)
    snapshot = dataclasses.replace(
        make_snapshot([leader, guarded, below]), protected=frozenset({11})
    )
    assert expand(Victim.process(leader, "test"), snapshot).family == ()


def test_a_child_of_a_zombie_is_an_orphan_and_adopted() -> None:
    """A zombie parent is a dead one: its child, still in the group, goes with the leader."""
    leader = make_process(10)
    dead = make_process(11, ppid=10, pgid=10, state="Z")
    child = make_process(12, ppid=11, pgid=10)
    snapshot = make_snapshot([leader, dead, child])
    assert expand(Victim.process(leader, "test"), snapshot).family == (child.identity,)


def test_a_parent_that_joined_its_childs_group_makes_one_family_without_hanging() -> None:
    """A parent moved into its child's process group (setpgid): the child links to its parent,
    the parent is adopted by the child, the group's leader. A cycle of links: one family."""
    parent = make_process(10, pgid=11)
    child = make_process(11, ppid=10, pgid=11)
    families = _families([parent, child])
    assert len(families) == 1
    assert sorted([*families, *next(iter(families.values()))]) == [10, 11]


def test_scope_root_is_never_turned_into_a_cgroup_victim() -> None:
    """The victim's group is the scope itself: family by pids, never cgroup.kill of the scope."""
    parent = make_process(10, cgroup="/jobs")
    kid = make_process(11, ppid=10, pgid=10, cgroup="/jobs")
    scope = CgroupRecord(path="/jobs", memory=None, pressure=None, pids=(10, 11))
    snapshot = make_snapshot([parent, kid], [scope], scope="/jobs")
    expanded = expand(run_policy(CulpritPolicy, snapshot).victims[0], snapshot)
    assert expanded.kind is VictimKind.PROCESS and expanded.family == (kid.identity,)


def _chain(family: bool) -> PolicyChain:
    policy = CulpritPolicy(CulpritPolicy.Options())
    link = ChainLink(policy, PolicySource("culprit", CulpritPolicy, BUILTIN), 1.0)
    return PolicyChain([link], family=family)


def test_chain_expands_the_winner_unless_family_is_off() -> None:
    """kill.family (the chain's family flag) decides whether descendants die too."""
    import asyncio

    parent = make_process(10)
    kid = make_process(11, ppid=10, pgid=10)
    snapshot = make_snapshot([parent, kid])
    on = asyncio.run(_chain(True).decide(snapshot)).decision.victims[0]
    off = asyncio.run(_chain(False).decide(snapshot)).decision.victims[0]
    assert on.family == (kid.identity,)
    assert off.family == ()


def test_only_a_chain_ranking_on_rates_pays_for_the_second_sample() -> None:
    """The default chain wants history (200 ms second sample); oom_score alone does not."""
    from pressured.config import PolicySettings, ScopeSettings

    default = PolicyChain.from_settings(ScopeSettings().policies, "scopes.0.policies")
    alone = PolicyChain.from_settings([PolicySettings(name="oom_score")], "scopes.0.policies")
    assert default.wants_history
    assert not alone.wants_history
