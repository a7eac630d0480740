"""Ranking of the built-in ``adj_tiers`` policy (lmkd's order)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pressured.kernel.procfs import ProcessRecord
from pressured.policies.adj_tiers import AdjTiersPolicy
from pressured.testing import (
    assert_kills,
    assert_no_action,
    make_process,
    make_snapshot,
    run_policy,
)


def _processes() -> list[ProcessRecord]:
    return [
        make_process(10, adj=900, rss_mib=50),
        make_process(11, adj=900, rss_mib=80),
        make_process(12, adj=200, rss_mib=3000),
        make_process(13, adj=0, rss_mib=5000),
    ]


def test_highest_tier_first_heaviest_within() -> None:
    """The heaviest of the highest adj tier dies, not the largest overall."""
    snapshot = make_snapshot(processes=_processes())
    assert_kills(run_policy(AdjTiersPolicy, snapshot), pid=11)


def test_some_level_only_reaches_expendable_tiers() -> None:
    """With a floor of 900 for 'some', only adj >= 900 is eligible."""
    processes = [make_process(12, adj=200, rss_mib=3000), make_process(13, adj=0, rss_mib=5000)]
    snapshot = make_snapshot(processes=processes, level="some")
    decision = run_policy(AdjTiersPolicy, snapshot, min_adj_per_level={"some": 900, "full": 0})
    assert_no_action(decision)


def test_full_level_reaches_further() -> None:
    """A 'full' event with floor 0 may take the adj-200 tier."""
    processes = [make_process(12, adj=200, rss_mib=3000), make_process(13, adj=0, rss_mib=5000)]
    snapshot = make_snapshot(processes=processes, level="full")
    decision = run_policy(AdjTiersPolicy, snapshot, min_adj_per_level={"some": 900, "full": 0})
    assert_kills(decision, pid=12)


def test_unlisted_level_uses_default_floor() -> None:
    """Levels not in the map use default_min_adj."""
    snapshot = make_snapshot(processes=_processes(), level="memory")
    decision = run_policy(
        AdjTiersPolicy, snapshot, min_adj_per_level={"some": 900}, default_min_adj=1000
    )
    assert_no_action(decision)


def test_tie_within_tier_goes_to_younger() -> None:
    """Same adj and size: the later start time dies."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, adj=500, rss_mib=50, start_time=1),
            make_process(11, adj=500, rss_mib=50, start_time=2),
        ]
    )
    assert_kills(run_policy(AdjTiersPolicy, snapshot), pid=11)


def test_never_kill_tier_is_out_of_reach() -> None:
    """adj -1000 is never chosen."""
    snapshot = make_snapshot(processes=[make_process(10, adj=-1000, rss_mib=50)])
    assert_no_action(run_policy(AdjTiersPolicy, snapshot))


def test_floor_out_of_range_is_rejected() -> None:
    """A per-level floor outside -999..1000 is a configuration error."""
    with pytest.raises(ValidationError, match="some"):
        run_policy(AdjTiersPolicy, make_snapshot(), min_adj_per_level={"some": 5000})
