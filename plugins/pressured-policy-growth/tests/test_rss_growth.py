"""Tests for rss_growth with pressured.testing: successive hand-made snapshots, no sleeping."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

import pytest
from pressured_policy_growth import RssGrowthPolicy

from pressured.testing import (
    assert_kills,
    assert_no_action,
    make_policy,
    make_process,
    make_snapshot,
    run_policy,
)


def test_first_call_only_records() -> None:
    """With no history yet the policy takes no action."""
    policy = make_policy(RssGrowthPolicy)
    snapshot = make_snapshot(processes=[make_process(10, rss_mib=500)], at_s=100)
    assert_no_action(run_policy(policy, snapshot))


def test_fastest_grower_dies_not_the_largest() -> None:
    """A leaking small process is chosen over a large steady one."""
    policy = make_policy(RssGrowthPolicy, min_growth_mib=50)
    before = [make_process(10, comm="db", rss_mib=2000), make_process(11, comm="leak", rss_mib=100)]
    after = [make_process(10, comm="db", rss_mib=2010), make_process(11, comm="leak", rss_mib=400)]
    run_policy(policy, make_snapshot(processes=before, at_s=100))
    assert_kills(run_policy(policy, make_snapshot(processes=after, at_s=110)), pid=11)


def test_rate_beats_absolute_growth() -> None:
    """Growth per second ranks, so a fast short burst beats a slow long climb."""
    policy = make_policy(RssGrowthPolicy, min_growth_mib=10, horizon_s=60)
    run_policy(policy, make_snapshot(processes=[make_process(10, rss_mib=100)], at_s=0))
    run_policy(
        policy,
        make_snapshot(
            processes=[make_process(10, rss_mib=200), make_process(11, rss_mib=100)], at_s=40
        ),
    )
    decision = run_policy(
        policy,
        make_snapshot(
            processes=[make_process(10, rss_mib=300), make_process(11, rss_mib=250)], at_s=50
        ),
    )
    # pid 10: +200 MiB in 50 s = 4 MiB/s; pid 11: +150 MiB in 10 s = 15 MiB/s.
    assert_kills(decision, pid=11)


def test_small_growth_is_ignored() -> None:
    """Growth under min_growth_mib is no reason to kill."""
    policy = make_policy(RssGrowthPolicy, min_growth_mib=64)
    run_policy(policy, make_snapshot(processes=[make_process(10, rss_mib=100)], at_s=0))
    decision = run_policy(policy, make_snapshot(processes=[make_process(10, rss_mib=150)], at_s=5))
    assert_no_action(decision)


def test_samples_older_than_the_horizon_are_dropped() -> None:
    """Growth that happened before the horizon no longer counts."""
    policy = make_policy(RssGrowthPolicy, min_growth_mib=50, horizon_s=10)
    run_policy(policy, make_snapshot(processes=[make_process(10, rss_mib=100)], at_s=0))
    run_policy(policy, make_snapshot(processes=[make_process(10, rss_mib=500)], at_s=30))
    decision = run_policy(policy, make_snapshot(processes=[make_process(10, rss_mib=510)], at_s=35))
    assert_no_action(decision)


def test_reused_pid_starts_a_new_history() -> None:
    """A new process with an old PID is not charged with the old one's growth."""
    policy = make_policy(RssGrowthPolicy, min_growth_mib=50)
    run_policy(policy, make_snapshot(processes=[make_process(10, rss_mib=10)], at_s=0))
    reborn = make_process(10, rss_mib=900, start_time=999_999)
    assert_no_action(run_policy(policy, make_snapshot(processes=[reborn], at_s=5)))


def test_history_forgets_processes_that_left() -> None:
    """State holds only processes still in the snapshot."""
    policy = make_policy(RssGrowthPolicy)
    run_policy(policy, make_snapshot(processes=[make_process(10), make_process(11)], at_s=0))
    run_policy(policy, make_snapshot(processes=[make_process(11)], at_s=1))
    assert isinstance(policy, RssGrowthPolicy)
    assert set(policy.history) == {(11, 1100)}


def test_never_kill_marking_is_respected() -> None:
    """A process with oom_score_adj -1000 is never chosen, however fast it grows."""
    policy = make_policy(RssGrowthPolicy, min_growth_mib=10)
    run_policy(policy, make_snapshot(processes=[make_process(10, rss_mib=10, adj=-1000)], at_s=0))
    grown = make_process(10, rss_mib=900, adj=-1000)
    assert_no_action(run_policy(policy, make_snapshot(processes=[grown], at_s=5)))


def test_entry_point_resolves_when_installed() -> None:
    """Installed, the plugin is found by its entry-point name."""
    try:
        distribution("pressured-policy-growth")
    except PackageNotFoundError:
        pytest.skip("pressured-policy-growth is not pip-installed here")
    from pressured.policies.registry import resolve

    assert resolve("rss_growth").policy_class is RssGrowthPolicy
