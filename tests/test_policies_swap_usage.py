"""Ranking of the built-in ``swap_usage`` policy."""

from __future__ import annotations

from pressured.kernel.procfs import ProcessRecord
from pressured.policies.swap_usage import SwapUsagePolicy
from pressured.testing import (
    assert_kills,
    assert_no_action,
    make_process,
    make_snapshot,
    run_policy,
)


def _procs() -> list[ProcessRecord]:
    return [
        make_process(10, rss_mib=900, swap_mib=100),
        make_process(11, rss_mib=100, swap_mib=400),
        make_process(12, rss_mib=3000),
    ]


def test_largest_swap_user_dies_when_swap_is_short() -> None:
    """Below the free-swap limit the largest swap user is chosen."""
    snapshot = make_snapshot(processes=_procs(), swap_free_percent=5)
    assert_kills(run_policy(SwapUsagePolicy, snapshot), pid=11)


def test_enough_free_swap_means_no_action() -> None:
    """Free swap at or above the limit gives no action."""
    snapshot = make_snapshot(processes=_procs(), swap_free_percent=50)
    assert_no_action(run_policy(SwapUsagePolicy, snapshot))


def test_no_swap_means_no_action() -> None:
    """A host without swap gives no action, with that reason."""
    snapshot = make_snapshot(processes=_procs())
    decision = run_policy(SwapUsagePolicy, snapshot)
    assert_no_action(decision)
    assert "no swap" in decision.reason


def test_limit_is_configurable() -> None:
    """max_swap_free_percent moves the line."""
    snapshot = make_snapshot(processes=_procs(), swap_free_percent=30)
    assert_kills(run_policy(SwapUsagePolicy, snapshot, max_swap_free_percent=40), pid=11)


def test_tie_goes_to_larger_total_memory() -> None:
    """Equal swap: the larger RSS + swap dies."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, rss_mib=10, swap_mib=200),
            make_process(11, rss_mib=90, swap_mib=200),
        ],
        swap_free_percent=1,
    )
    assert_kills(run_policy(SwapUsagePolicy, snapshot), pid=11)


def test_nobody_swapped_out_means_no_action() -> None:
    """Swap short but no process has swap: nothing to gain."""
    snapshot = make_snapshot(processes=[make_process(10, rss_mib=500)], swap_free_percent=1)
    assert_no_action(run_policy(SwapUsagePolicy, snapshot))


def test_never_kill_marking_is_respected() -> None:
    """A swapped-out process with adj -1000 is skipped."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, swap_mib=900, adj=-1000),
            make_process(11, swap_mib=10),
        ],
        swap_free_percent=1,
    )
    assert_kills(run_policy(SwapUsagePolicy, snapshot), pid=11)
