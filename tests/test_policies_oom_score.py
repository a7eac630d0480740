"""Ranking of the built-in ``oom_score`` policy on hand-made snapshots."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pressured.policies.oom_score import OomScorePolicy
from pressured.testing import (
    assert_kills,
    assert_no_action,
    make_process,
    make_snapshot,
    run_policy,
)


def test_highest_oom_score_dies() -> None:
    """The process with the highest kernel badness is chosen."""
    snapshot = make_snapshot(
        processes=[make_process(10, oom_score=700), make_process(11, oom_score=900)]
    )
    assert_kills(run_policy(OomScorePolicy, snapshot), pid=11)


def test_tie_on_score_goes_to_larger_memory() -> None:
    """Equal scores: the larger RSS + swap dies."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, oom_score=800, rss_mib=100, swap_mib=300),
            make_process(11, oom_score=800, rss_mib=300),
        ]
    )
    assert_kills(run_policy(OomScorePolicy, snapshot), pid=10)


def test_full_tie_goes_to_the_younger_process() -> None:
    """Equal scores and sizes: the later start time dies."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, oom_score=800, rss_mib=100, start_time=5000),
            make_process(11, oom_score=800, rss_mib=100, start_time=4000),
        ]
    )
    assert_kills(run_policy(OomScorePolicy, snapshot), pid=10)


def test_adj_minus_1000_is_never_chosen() -> None:
    """oom_score_adj -1000 is skipped even with the highest score."""
    snapshot = make_snapshot(
        processes=[make_process(10, oom_score=1900, adj=-1000), make_process(11, oom_score=10)]
    )
    assert_kills(run_policy(OomScorePolicy, snapshot), pid=11)


def test_only_never_kill_processes_means_no_action() -> None:
    """No candidate above -1000 gives no action."""
    snapshot = make_snapshot(processes=[make_process(10, adj=-1000)])
    assert_no_action(run_policy(OomScorePolicy, snapshot))


def test_prefer_adds_the_bonus() -> None:
    """A preferred process overtakes a higher score by the prefer bonus."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, comm="chrome", oom_score=700),
            make_process(11, comm="db", oom_score=900),
        ]
    )
    decision = run_policy(OomScorePolicy, snapshot, prefer=["^chrome$"])
    assert_kills(decision, pid=10)
    assert decision.victims[0].figures["badness"] == 1000


def test_avoid_subtracts_the_bonus() -> None:
    """An avoided process falls behind a lower score."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, comm="postgres", oom_score=900),
            make_process(11, comm="batch", oom_score=700),
        ]
    )
    assert_kills(run_policy(OomScorePolicy, snapshot, avoid=["postgres"]), pid=11)


def test_bonus_size_is_configurable() -> None:
    """A small avoid bonus does not overturn a large gap."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, comm="postgres", oom_score=900),
            make_process(11, comm="batch", oom_score=700),
        ]
    )
    decision = run_policy(OomScorePolicy, snapshot, avoid=["postgres"], avoid_bonus=100)
    assert_kills(decision, pid=10)


def test_ignore_excludes() -> None:
    """An ignored process is never chosen."""
    snapshot = make_snapshot(
        processes=[make_process(10, comm="Xorg", oom_score=1500), make_process(11, oom_score=1)]
    )
    assert_kills(run_policy(OomScorePolicy, snapshot, ignore=["^Xorg$"]), pid=11)


def test_ignore_by_uid() -> None:
    """A uid pattern ignores every process of that user."""
    snapshot = make_snapshot(
        processes=[make_process(10, uid=0, oom_score=1500), make_process(11, uid=1000)]
    )
    assert_kills(run_policy(OomScorePolicy, snapshot, ignore=[{"uid": 0}]), pid=11)


def test_prefer_by_cgroup_path() -> None:
    """A cgroup pattern matches on the process's cgroup path."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, cgroup="/batch/job1", oom_score=600),
            make_process(11, cgroup="/system.slice/db", oom_score=800),
        ]
    )
    assert_kills(run_policy(OomScorePolicy, snapshot, prefer=[{"cgroup": "^/batch/"}]), pid=10)


def test_sort_by_rss_takes_the_largest() -> None:
    """sort_by='rss' chooses the largest RSS + swap whatever the score."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, rss_mib=100, oom_score=1300),
            make_process(11, rss_mib=900, oom_score=500),
        ]
    )
    assert_kills(run_policy(OomScorePolicy, snapshot, sort_by="rss"), pid=11)


def test_sort_by_rss_still_honours_prefer() -> None:
    """With sort_by='rss' a preferred process goes before a larger plain one."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, comm="cache", rss_mib=100),
            make_process(11, comm="db", rss_mib=900),
        ]
    )
    decision = run_policy(OomScorePolicy, snapshot, sort_by="rss", prefer=["cache"])
    assert_kills(decision, pid=10)


def test_min_rss_filters_small_processes() -> None:
    """min_rss_mib leaves smaller processes out."""
    snapshot = make_snapshot(processes=[make_process(10, rss_mib=5, oom_score=1300)])
    assert_no_action(run_policy(OomScorePolicy, snapshot, min_rss_mib=10))


def test_ranking_is_evidence_in_order() -> None:
    """The ranking lists candidates best first with their badness."""
    snapshot = make_snapshot(
        processes=[make_process(p, comm=f"p{p}", oom_score=p) for p in range(100, 110)]
    )
    decision = run_policy(OomScorePolicy, snapshot)
    assert decision.ranking[:2] == (("109 p109", 109), ("108 p108", 108))
    assert len(decision.ranking) == 5


def test_unknown_sort_by_is_rejected() -> None:
    """sort_by only takes the documented values."""
    with pytest.raises(ValidationError):
        run_policy(OomScorePolicy, make_snapshot(), sort_by="age")
