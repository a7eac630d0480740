"""Ranking of the built-in ``cgroup_size_growth`` policy (oomd's size-or-growth rule)."""

from __future__ import annotations

from pressured.policies.cgroup_size_growth import CgroupSizeGrowthPolicy, effective_usage
from pressured.snapshot import CgroupRecord, Snapshot
from pressured.testing import (
    assert_kills,
    assert_no_action,
    make_cgroup,
    make_policy,
    make_snapshot,
    run_policy,
)


def _snapshot(*groups: CgroupRecord) -> Snapshot:
    return make_snapshot(cgroups=groups, scope="/jobs")


def _group(name: str, usage_mib: float, **kwargs: object) -> CgroupRecord:
    return make_cgroup(f"/jobs/{name}", usage_mib=usage_mib, pids=(100,), **kwargs)  # type: ignore[arg-type]


def test_group_over_half_the_total_dies() -> None:
    """A group using >= 50 % of its siblings' total is the victim."""
    snapshot = _snapshot(_group("a", 600), _group("b", 300), _group("c", 100))
    assert_kills(run_policy(CgroupSizeGrowthPolicy, snapshot), cgroup="/jobs/a")


def test_no_group_over_the_share_and_no_history_means_no_action() -> None:
    """Evenly sized groups on the first call give no action."""
    snapshot = _snapshot(_group("a", 300), _group("b", 300), _group("c", 300))
    assert_no_action(run_policy(CgroupSizeGrowthPolicy, snapshot))


def test_protection_is_subtracted_first() -> None:
    """memory.low/min protection is taken off before shares are compared."""
    snapshot = _snapshot(_group("a", 600, low_mib=500), _group("b", 400))
    assert_kills(run_policy(CgroupSizeGrowthPolicy, snapshot), cgroup="/jobs/b")


def test_effective_usage_uses_the_larger_protection() -> None:
    """memory.min and memory.low do not add up: the larger counts."""
    assert effective_usage(make_cgroup("/x", usage_mib=100, low_mib=30, min_mib=60)) == 40 * 2**20


def test_fast_growth_against_the_average_dies() -> None:
    """A group growing to twice its moving average is chosen by the growth rule."""
    policy = make_policy(CgroupSizeGrowthPolicy, ewma_alpha=0.5)
    run_policy(policy, _snapshot(_group("a", 300), _group("b", 300), _group("c", 300)))
    decision = run_policy(policy, _snapshot(_group("a", 300), _group("b", 300), _group("c", 450)))
    victim = assert_kills(decision, cgroup="/jobs/c")
    assert victim.figures["rule"] == "growth"


def test_growth_rule_ignores_small_groups() -> None:
    """Growth below min_usage_mib does not count."""
    policy = make_policy(CgroupSizeGrowthPolicy, min_usage_mib=64)
    groups = [_group("a", 300), _group("b", 300), _group("tiny", 10)]
    run_policy(policy, _snapshot(*groups))
    grown = [_group("a", 300), _group("b", 300), _group("tiny", 40)]
    assert_no_action(run_policy(policy, _snapshot(*grown)))


def test_average_is_kept_across_calls() -> None:
    """The moving average follows the configured weight."""
    policy = make_policy(CgroupSizeGrowthPolicy, ewma_alpha=0.5)
    assert isinstance(policy, CgroupSizeGrowthPolicy)
    run_policy(policy, _snapshot(_group("a", 100), _group("b", 100)))
    run_policy(policy, _snapshot(_group("a", 200), _group("b", 100)))
    assert policy.averages["/jobs/a"] == 150 * 2**20


def test_vanished_groups_are_forgotten() -> None:
    """State keeps only groups still in scope."""
    policy = make_policy(CgroupSizeGrowthPolicy)
    assert isinstance(policy, CgroupSizeGrowthPolicy)
    run_policy(policy, _snapshot(_group("a", 100), _group("b", 100)))
    run_policy(policy, _snapshot(_group("b", 100), _group("c", 100)))
    assert set(policy.averages) == {"/jobs/b", "/jobs/c"}


def test_oomd_prefer_goes_first() -> None:
    """A qualifying oomd_prefer group beats a larger plain one."""
    policy = make_policy(CgroupSizeGrowthPolicy, size_threshold_percent=30)
    snapshot = _snapshot(_group("a", 500), _group("b", 350, prefer=True), _group("c", 150))
    assert_kills(run_policy(policy, snapshot), cgroup="/jobs/b")


def test_oomd_avoid_goes_last() -> None:
    """An oomd_avoid group is passed over while a plain group qualifies."""
    policy = make_policy(CgroupSizeGrowthPolicy, size_threshold_percent=30)
    snapshot = _snapshot(_group("a", 500, avoid=True), _group("b", 350), _group("c", 150))
    assert_kills(run_policy(policy, snapshot), cgroup="/jobs/b")


def test_oomd_avoid_still_dies_when_alone_qualifying() -> None:
    """oomd_avoid orders, it does not protect (the guard's protect_cgroups does)."""
    snapshot = _snapshot(_group("a", 700, avoid=True), _group("b", 300))
    assert_kills(run_policy(CgroupSizeGrowthPolicy, snapshot), cgroup="/jobs/a")


def test_xattrs_can_be_ignored() -> None:
    """honour_oomd_xattrs=false ranks by size alone."""
    policy = make_policy(
        CgroupSizeGrowthPolicy, size_threshold_percent=30, honour_oomd_xattrs=False
    )
    snapshot = _snapshot(_group("a", 500, avoid=True), _group("b", 350), _group("c", 150))
    assert_kills(run_policy(policy, snapshot), cgroup="/jobs/a")


def test_empty_groups_are_never_chosen() -> None:
    """A group without member processes is skipped: killing it frees nothing."""
    snapshot = _snapshot(make_cgroup("/jobs/a", usage_mib=900), _group("b", 100))
    assert_kills(run_policy(CgroupSizeGrowthPolicy, snapshot), cgroup="/jobs/b")


def test_system_scope_has_no_cgroups_to_kill() -> None:
    """Without child cgroups the policy takes no action."""
    assert_no_action(run_policy(CgroupSizeGrowthPolicy, make_snapshot()))


def test_size_tie_goes_to_the_path_order() -> None:
    """Two equal qualifying groups give a stable answer."""
    policy = make_policy(CgroupSizeGrowthPolicy, size_threshold_percent=40)
    snapshot = _snapshot(_group("a", 450), _group("b", 450), _group("c", 100))
    assert_kills(run_policy(policy, snapshot), cgroup="/jobs/b")


def test_group_marked_oomd_omit_is_never_chosen() -> None:
    """systemd's ManagedOOMPreference=omit (user.oomd_omit) keeps the biggest group alive."""
    import dataclasses

    omitted = dataclasses.replace(_group("a", 900), omit=True)
    snapshot = _snapshot(omitted, _group("b", 100), _group("c", 60))
    assert_kills(run_policy(CgroupSizeGrowthPolicy, snapshot), cgroup="/jobs/b")
