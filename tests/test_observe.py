"""The scope reports decisions to an observer it is given; the daemon's metrics is one."""

from __future__ import annotations

from pressured.observe import DecisionObserver, report_decision
from pressured.ops.metrics import Metrics
from pressured.policies.base import Decision
from pressured.policies.chain import ChainResult, PolicyFailure


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def observe_scan(self, scope: str, outcome: str, problems: int) -> None:
        self.calls.append(("scan", scope, outcome, str(problems)))

    def observe_decision(self, scope: str, duration_s: float, outcome: str) -> None:
        self.calls.append(("decision", scope, outcome))

    def observe_policy(self, policy: str, duration_s: float, failure_kind: str | None) -> None:
        self.calls.append(("policy", policy, str(failure_kind)))


def test_each_policy_run_then_the_decision_reach_the_observer() -> None:
    """A failed policy is reported with its failure kind, then the no-action decision."""
    result = ChainResult(
        decision=Decision.no_action("nothing to do"),
        failures=(PolicyFailure("slow", "timeout", "no answer"),),
        durations_s={"slow": 0.5, "oom_score": 0.001},
    )
    recorder = Recorder()
    report_decision(recorder, "/jobs", result, 0.6)
    assert recorder.calls == [
        ("policy", "slow", "timeout"),
        ("policy", "oom_score", "None"),
        ("decision", "/jobs", "no_action"),
    ]


def test_metrics_is_a_decision_observer() -> None:
    """The daemon hands its Metrics to scopes as their observer: its counts move."""
    metrics = Metrics()
    observer: DecisionObserver = metrics
    result = ChainResult(decision=Decision.no_action("quiet"), durations_s={"oom_score": 0.002})
    report_decision(observer, "/jobs", result, 0.01)
    labels = {"scope": "/jobs", "outcome": "no_action"}
    assert metrics.value("pressured_decision_seconds_count", labels) == 1.0
