"""Ranking of the built-in ``largest`` policy."""

from __future__ import annotations

from pressured.policies.largest import LargestPolicy
from pressured.testing import (
    assert_kills,
    assert_no_action,
    make_process,
    make_snapshot,
    run_policy,
)


def test_largest_rss_plus_swap_dies() -> None:
    """RSS and swap are added: 100 + 500 beats 400."""
    snapshot = make_snapshot(
        processes=[make_process(10, rss_mib=100, swap_mib=500), make_process(11, rss_mib=400)]
    )
    assert_kills(run_policy(LargestPolicy, snapshot), pid=10)


def test_tie_goes_to_higher_adj() -> None:
    """Equal sizes: the higher oom_score_adj dies."""
    snapshot = make_snapshot(
        processes=[make_process(10, rss_mib=100, adj=500), make_process(11, rss_mib=100)]
    )
    assert_kills(run_policy(LargestPolicy, snapshot), pid=10)


def test_tie_then_goes_to_younger() -> None:
    """Equal sizes and adj: the later start time dies."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, rss_mib=100, start_time=9),
            make_process(11, rss_mib=100, start_time=3),
        ]
    )
    assert_kills(run_policy(LargestPolicy, snapshot), pid=10)


def test_skips_never_kill_and_ignored() -> None:
    """adj -1000 and ignored processes are left out."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, rss_mib=900, adj=-1000),
            make_process(11, comm="keep", rss_mib=800),
            make_process(12, rss_mib=10),
        ]
    )
    assert_kills(run_policy(LargestPolicy, snapshot, ignore=["^keep$"]), pid=12)


def test_min_mib_can_leave_nothing() -> None:
    """Nobody above min_mib gives no action."""
    snapshot = make_snapshot(processes=[make_process(10, rss_mib=10)])
    assert_no_action(run_policy(LargestPolicy, snapshot, min_mib=50))


def test_pid_1_and_self_are_not_candidates() -> None:
    """PID 1 and the daemon itself are not ranked even when largest."""
    snapshot = make_snapshot(
        processes=[
            make_process(1, comm="init", rss_mib=5000),
            make_process(77, rss_mib=4000),
            make_process(12, rss_mib=10),
        ],
        self_pid=77,
    )
    assert_kills(run_policy(LargestPolicy, snapshot), pid=12)
