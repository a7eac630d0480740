"""What a scope tells the outside world about its decisions, without knowing who listens.

The scope is *given* a :class:`DecisionObserver` (the daemon passes its
:class:`~pressured.ops.metrics.Metrics`, which satisfies the protocol as it is); the scope
never reaches up into the operations layer itself.
"""

from __future__ import annotations

from typing import Protocol

from pressured.policies.chain import ChainResult

__all__ = ["DecisionObserver", "report_decision"]


class DecisionObserver(Protocol):
    """**Protocol:** hears how long each decision and each policy run took."""

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
