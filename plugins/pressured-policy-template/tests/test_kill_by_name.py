"""Tests for kill_by_name, written with pressured.testing: no root, no real pressure."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

import pytest
from pressured_policy_template import KillByNameOptions, KillByNamePolicy
from pydantic import ValidationError

from pressured.testing import (
    assert_kills,
    assert_no_action,
    make_process,
    make_snapshot,
    run_chain,
    run_policy,
)


def test_largest_matching_process_dies() -> None:
    """The largest process with a listed name is chosen."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, comm="java", rss_mib=300),
            make_process(11, comm="java", rss_mib=900),
            make_process(12, comm="postgres", rss_mib=4000),
        ]
    )
    assert_kills(run_policy(KillByNamePolicy, snapshot, names=["java"]), pid=11)


def test_unlisted_names_are_left_alone() -> None:
    """Without a listed name running, the policy takes no action."""
    snapshot = make_snapshot(processes=[make_process(12, comm="postgres", rss_mib=4000)])
    assert_no_action(run_policy(KillByNamePolicy, snapshot, names=["java"]))


def test_tie_goes_to_the_younger_process() -> None:
    """Of two equal processes the one started later dies."""
    snapshot = make_snapshot(
        processes=[
            make_process(10, comm="java", rss_mib=500, start_time=1000),
            make_process(11, comm="java", rss_mib=500, start_time=2000),
        ]
    )
    assert_kills(run_policy(KillByNamePolicy, snapshot, names=["java"]), pid=11)


def test_never_kill_marking_is_respected() -> None:
    """A process with oom_score_adj -1000 is never chosen."""
    snapshot = make_snapshot(processes=[make_process(10, comm="java", rss_mib=900, adj=-1000)])
    assert_no_action(run_policy(KillByNamePolicy, snapshot, names=["java"]))


def test_min_mib_skips_small_processes() -> None:
    """Processes under min_mib are not considered."""
    snapshot = make_snapshot(processes=[make_process(10, comm="java", rss_mib=20)])
    assert_no_action(run_policy(KillByNamePolicy, snapshot, names=["java"], min_mib=100))


def test_names_are_required() -> None:
    """An empty name list is a configuration error."""
    with pytest.raises(ValidationError):
        run_policy(KillByNamePolicy, make_snapshot(), names=[])


def test_guard_protection_wins_over_the_policy() -> None:
    """Behind the real guard, a protected name is refused even when listed."""
    snapshot = make_snapshot(
        processes=[make_process(10, comm="sshd", rss_mib=900, cgroup="/system.slice/ssh.service")]
    )
    result = run_chain(snapshot, KillByNamePolicy(KillByNameOptions(names=("sshd",))))
    assert_no_action(result.decision)
    assert result.rejected


def test_entry_point_resolves_when_installed() -> None:
    """Installed, the plugin is found by its entry-point name."""
    try:
        distribution("pressured-policy-template")
    except PackageNotFoundError:
        pytest.skip("pressured-policy-template is not pip-installed here")
    from pressured.policies.registry import resolve

    source = resolve("kill_by_name")
    assert source.policy_class is KillByNamePolicy
    assert source.distribution is not None
    assert source.distribution.startswith("pressured-policy-template")
