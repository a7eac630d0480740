"""What a scope tells the outside world about its scans and decisions, without knowing who
listens.

The scope is *given* a :class:`DecisionObserver` (the daemon passes its
:class:`~pressured.ops.metrics.Metrics`, which satisfies the protocol as it is); the scope
never reaches up into the operations layer itself.
"""

from __future__ import annotations

from typing import Protocol

from pressured.policies.chain import ChainResult
from pressured.snapshot import Snapshot, scan_is_empty

__all__ = ["DecisionObserver", "report_decision", "report_scan"]


class DecisionObserver(Protocol):
    """**Protocol:** hears how each scan went and how long each decision and policy run took."""

    def observe_scan(self, scope: str, outcome: str, problems: int) -> None:
        """One snapshot of ``scope``: ``outcome`` is ``"complete"``, ``"partial"`` (the
        deadline cut it short) or ``"empty"`` (nothing read of a scope with members);
        ``problems`` counts its unreadable files and cgroup errors (each logged)."""

    def observe_decision(self, scope: str, duration_s: float, outcome: str) -> None:
        """One decision of ``scope``: ``outcome`` is ``"kill"`` or ``"no_action"``."""

    def observe_policy(self, policy: str, duration_s: float, failure_kind: str | None) -> None:
        """One run of one policy; ``failure_kind`` None means it answered validly."""


def report_decision(
    observer: DecisionObserver, scope: str, result: ChainResult, duration_s: float
) -> None:
    """Feed one chain result (every policy's run, then the decision) to ``observer``."""
    failed = {failure.policy: failure.kind for failure in result.failures}
    for policy, policy_s in result.durations_s.items():
        observer.observe_policy(policy, policy_s, failed.get(policy))
    observer.observe_decision(scope, duration_s, "kill" if result.decision.acts else "no_action")


def report_scan(observer: DecisionObserver, scope: str, snapshot: Snapshot) -> None:
    """Feed one snapshot's outcome and problem count to ``observer``."""
    outcome = "complete" if snapshot.complete else "partial"
    if scan_is_empty(snapshot):
        outcome = "empty"
    observer.observe_scan(scope, outcome, len(snapshot.problems))
