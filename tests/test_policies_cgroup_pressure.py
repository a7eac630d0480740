"""Ranking of the built-in ``cgroup_pressure`` policy (systemd-oomd's pressure rule)."""

from __future__ import annotations

from pressured.policies.cgroup_pressure import CgroupPressurePolicy
from pressured.policies.common import child_cgroups
from pressured.snapshot import CgroupRecord, Snapshot
from pressured.testing import (
    assert_kills,
    assert_no_action,
    make_cgroup,
    make_policy,
    make_snapshot,
    run_policy,
)


def _group(
    name: str,
    avg10: float,
    *,
    avg60: float = 0.0,
    reclaim: int = 0,
    total_us: int = 0,
    prefer: bool = False,
    avoid: bool = False,
) -> CgroupRecord:
    return make_cgroup(
        f"/jobs/{name}",
        usage_mib=100,
        pressure_full_avg10=avg10,
        pressure_full_avg60=avg60,
        pressure_full_total_us=total_us,
        reclaim_pages=reclaim,
        pids=(100,),
        prefer=prefer,
        avoid=avoid,
    )


def _snap(*groups: CgroupRecord) -> Snapshot:
    return make_snapshot(cgroups=groups, scope="/jobs")


def _twice(policy: object, first: Snapshot, second: Snapshot) -> object:
    run_policy(policy, first)  # type: ignore[arg-type]
    return run_policy(policy, second)  # type: ignore[arg-type]


def test_first_call_only_sets_the_baseline() -> None:
    """Without a previous call nothing is known to be reclaiming: no action."""
    assert_no_action(run_policy(CgroupPressurePolicy, _snap(_group("a", 90, reclaim=10))))


def test_most_pressured_reclaiming_group_dies() -> None:
    """The highest avg10 among reclaiming groups above the threshold is chosen."""
    policy = make_policy(CgroupPressurePolicy)
    run_policy(policy, _snap(_group("a", 70, reclaim=10), _group("b", 80, reclaim=10)))
    second = _snap(_group("a", 70, reclaim=20), _group("b", 80, reclaim=30))
    assert_kills(run_policy(policy, second), cgroup="/jobs/b")


def test_group_that_stopped_reclaiming_is_spared() -> None:
    """High but stale pressure without reclaim progress is no reason to kill."""
    policy = make_policy(CgroupPressurePolicy)
    run_policy(policy, _snap(_group("a", 90, reclaim=10, total_us=500)))
    decision = run_policy(policy, _snap(_group("a", 90, reclaim=10, total_us=500)))
    assert_no_action(decision)


def test_growing_stall_total_counts_as_reclaiming() -> None:
    """A rising cumulative stall qualifies even when pgscan is not known."""
    policy = make_policy(CgroupPressurePolicy)
    run_policy(policy, _snap(_group("a", 90, total_us=500)))
    assert_kills(run_policy(policy, _snap(_group("a", 90, total_us=900))), cgroup="/jobs/a")


def test_below_threshold_is_left_alone() -> None:
    """Pressure under the threshold gives no action."""
    policy = make_policy(CgroupPressurePolicy, threshold_percent=60)
    run_policy(policy, _snap(_group("a", 50, reclaim=1)))
    assert_no_action(run_policy(policy, _snap(_group("a", 50, reclaim=9))))


def test_avg10_tie_goes_to_avg60() -> None:
    """Equal avg10: the higher avg60 dies."""
    policy = make_policy(CgroupPressurePolicy, require_reclaim=False)
    snapshot = _snap(_group("a", 80, avg60=20), _group("b", 80, avg60=40))
    assert_kills(run_policy(policy, snapshot), cgroup="/jobs/b")


def test_require_reclaim_can_be_switched_off() -> None:
    """require_reclaim=false acts on the first call."""
    decision = run_policy(CgroupPressurePolicy, _snap(_group("a", 90)), require_reclaim=False)
    assert_kills(decision, cgroup="/jobs/a")


def test_some_line_is_used_when_configured() -> None:
    """kind='some' reads the some line, not full."""
    group = make_cgroup(
        "/jobs/a", pressure_some_avg10=90, pressure_full_avg10=1, pids=(100,), usage_mib=10
    )
    policy = make_policy(CgroupPressurePolicy, kind="some", require_reclaim=False)
    assert_kills(run_policy(policy, _snap(group)), cgroup="/jobs/a")


def test_full_falls_back_to_some_without_a_full_line() -> None:
    """Where the kernel reports no full line, some is read."""
    group = make_cgroup("/jobs/a", pressure_some_avg10=90, pids=(100,), usage_mib=10)
    decision = run_policy(CgroupPressurePolicy, _snap(group), require_reclaim=False)
    assert_kills(decision, cgroup="/jobs/a")


def test_oomd_prefer_beats_higher_pressure() -> None:
    """An eligible oomd_prefer group goes before a more pressured plain one."""
    policy = make_policy(CgroupPressurePolicy, require_reclaim=False)
    snapshot = _snap(_group("a", 95), _group("b", 70, prefer=True))
    assert_kills(run_policy(policy, snapshot), cgroup="/jobs/b")


def test_oomd_avoid_goes_last() -> None:
    """An oomd_avoid group is passed over while a plain one is eligible."""
    policy = make_policy(CgroupPressurePolicy, require_reclaim=False)
    snapshot = _snap(_group("a", 95, avoid=True), _group("b", 70))
    assert_kills(run_policy(policy, snapshot), cgroup="/jobs/b")


def test_scope_group_itself_is_never_a_candidate() -> None:
    """Only children are ranked, never the scope group in first position."""
    scope = make_cgroup("/jobs", pressure_full_avg10=99, pids=(100,), usage_mib=500)
    snapshot = make_snapshot(cgroups=[scope, _group("a", 10)], scope="/jobs")
    assert child_cgroups(snapshot)[0].path == "/jobs/a"
    assert_no_action(run_policy(CgroupPressurePolicy, snapshot, require_reclaim=False))


def test_group_marked_oomd_omit_is_never_chosen() -> None:
    """The most pressured group, marked user.oomd_omit, is passed over for the next one."""
    import dataclasses

    policy = make_policy(CgroupPressurePolicy)
    omit = dataclasses.replace(_group("a", 95, reclaim=10), omit=True)
    before = _snap(
        dataclasses.replace(_group("a", 95, reclaim=0), omit=True), _group("b", 70, reclaim=0)
    )
    after = _snap(omit, _group("b", 70, reclaim=10))
    assert_kills(_twice(policy, before, after), cgroup="/jobs/b")  # type: ignore[arg-type]
