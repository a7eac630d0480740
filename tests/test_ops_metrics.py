"""Metrics: labels after feeding events and kill records, the pressure cache, build info."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import generate_latest

from pressured.events import (
    EventSource,
    KillRecord,
    KillResult,
    PressureEvent,
    VictimKind,
)
from pressured.kernel.pidfd import MreleaseResult, MreleaseStatus
from pressured.kernel.psi import Pressure, PressureLine
from pressured.ops import Sink
from pressured.ops.metrics import Metrics

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def make_record(**changes: Any) -> KillRecord:
    fields: dict[str, Any] = {
        "kind": VictimKind.PROCESS,
        "target": "pid 4242 (hog)",
        "pid": 4242,
        "comm": "hog",
        "cgroup": "/jobs/batch",
        "policy": "oom_score",
        "reason": "largest oom_score 987",
        "scope": "system",
        "level": "some",
        "result": KillResult.KILLED,
        "signal": "SIGKILL",
        "rss_before_bytes": 512 << 20,
        "mrelease": MreleaseResult(MreleaseStatus.REAPED, 0, 2_500_000),
        "event_to_decision_ms": 1.5,
        "decision_to_signal_ms": 0.4,
        "signal_to_reaped_ms": 35.0,
        "signal_to_exit_ms": 60.0,
    }
    fields.update(changes)
    return KillRecord(**fields)


def pressure(some: float, full: float | None) -> Pressure:
    return Pressure(
        PressureLine(some, some, some, 1000),
        None if full is None else PressureLine(full, full, full, 500),
    )


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_metrics_is_a_sink() -> None:
    """Metrics satisfies the Sink protocol."""
    sink: Sink = Metrics()
    assert isinstance(sink, Sink)


def test_pressure_event_counted_by_scope_level_source(run_async: Runner) -> None:
    """A pressure event increments the counter with its scope, level and source labels."""
    metrics = Metrics()
    event = PressureEvent(scope="/jobs", level="full", source=EventSource.PSI)
    run_async(metrics.on_pressure(event))
    run_async(metrics.on_pressure(event))
    labels = {"scope": "/jobs", "level": "full", "source": "psi"}
    assert metrics.value("pressured_pressure_events_total", labels) == 2.0
    assert 'pressured_pressure_events_total{level="full",scope="/jobs",source="psi"} 2.0' in (
        exposition(metrics)
    )


def test_kill_record_fills_counters_and_histograms(run_async: Runner) -> None:
    """A killed victim shows in kills, mrelease, freed bytes and the timing histograms."""
    metrics = Metrics()
    run_async(metrics.on_kill(make_record()))
    kill_labels = {"scope": "system", "policy": "oom_score", "result": "killed", "kind": "process"}
    assert metrics.value("pressured_kills_total", kill_labels) == 1.0
    assert metrics.value("pressured_process_mrelease_total", {"status": "reaped"}) == 1.0
    assert metrics.value("pressured_freed_bytes_total", {"scope": "system"}) == 512 << 20
    reaped = {"kind": "process", "le": "0.05"}
    assert metrics.value("pressured_signal_to_reaped_seconds_bucket", reaped) == 1.0
    assert metrics.value("pressured_signal_to_exit_seconds_sum", {"kind": "process"}) == 0.06
    assert metrics.value("pressured_decision_to_signal_seconds_count", {"kind": "process"}) == 1
    text = exposition(metrics)
    assert (
        'pressured_kills_total{kind="process",policy="oom_score",result="killed",scope="system"}'
        in text
    )


def test_dry_run_kill_frees_nothing(run_async: Runner) -> None:
    """A dry-run record is counted as such and adds no freed bytes."""
    metrics = Metrics()
    record = make_record(result=KillResult.DRY_RUN, dry_run=True, mrelease=None)
    run_async(metrics.on_kill(record))
    labels = {"scope": "system", "policy": "oom_score", "result": "dry_run", "kind": "process"}
    assert metrics.value("pressured_kills_total", labels) == 1.0
    assert metrics.value("pressured_freed_bytes_total", {"scope": "system"}) is None


def test_cgroup_kill_with_lost_race(run_async: Runner) -> None:
    """A cgroup kill whose mrelease lost the exit race is labelled kind=cgroup, status=gone."""
    metrics = Metrics()
    record = make_record(
        kind=VictimKind.CGROUP,
        target="/jobs/batch",
        pid=None,
        mrelease=MreleaseResult(MreleaseStatus.GONE, 3, 1000),
        signal_to_reaped_ms=None,
    )
    run_async(metrics.on_kill(record))
    assert metrics.value("pressured_process_mrelease_total", {"status": "gone"}) == 1.0
    assert metrics.value("pressured_signal_to_reaped_seconds_count", {"kind": "cgroup"}) is None
    assert metrics.value("pressured_signal_to_exit_seconds_count", {"kind": "cgroup"}) == 1.0


def test_policy_decision_and_hook_observations() -> None:
    """observe_policy/observe_decision/observe_hook/set_triggers land in their metrics."""
    metrics = Metrics()
    metrics.observe_policy("largest", 0.002, None)
    metrics.observe_policy("largest", 0.5, "timeout")
    metrics.observe_decision("system", 0.003, "kill")
    metrics.observe_hook("pre_kill", "timeout", 2.0)
    metrics.set_triggers("system", 2)
    metrics.journal_failed()
    assert metrics.value("pressured_policy_duration_seconds_count", {"policy": "largest"}) == 2
    failures = {"policy": "largest", "kind": "timeout"}
    assert metrics.value("pressured_policy_failures_total", failures) == 1.0
    decision = {"scope": "system", "outcome": "kill"}
    assert metrics.value("pressured_decision_seconds_count", decision) == 1.0
    hook = {"stage": "pre_kill", "outcome": "timeout"}
    assert metrics.value("pressured_hook_runs_total", hook) == 1.0
    assert metrics.value("pressured_triggers_armed", {"scope": "system"}) == 2.0
    assert metrics.value("pressured_journal_errors_total") == 1.0


def test_pressure_gauge_is_cached_for_the_cache_period() -> None:
    """Scrapes within pressure_cache_s reuse one read; a later scrape reads again."""
    now = [1000.0]
    reads: list[float] = []

    def reader() -> Pressure:
        reads.append(now[0])
        return pressure(12.5, 3.0)

    metrics = Metrics(pressure_cache_s=10.0, clock=lambda: now[0])
    metrics.watch_pressure("system", reader)
    for _ in range(5):
        exposition(metrics)
    assert reads == [1000.0]
    assert metrics.value("pressured_pressure_avg10_ratio", {"scope": "system", "kind": "some"}) == (
        0.125
    )
    now[0] += 9.9
    exposition(metrics)
    assert len(reads) == 1
    now[0] += 0.2
    exposition(metrics)
    assert len(reads) == 2


def test_pressure_cache_has_a_ten_second_floor() -> None:
    """A shorter cache period than 10 s is raised to 10 s (faster reads starve triggers)."""
    assert Metrics(pressure_cache_s=1.0).pressure_cache_s == 10.0


def test_failing_pressure_read_is_not_retried_until_the_period_ends() -> None:
    """A reader raising OSError drops the gauge and is not called again within the period."""
    now = [0.0]
    calls: list[int] = []

    def reader() -> Pressure:
        calls.append(1)
        raise FileNotFoundError("gone")

    metrics = Metrics(clock=lambda: now[0])
    metrics.watch_pressure("/gone", reader)
    exposition(metrics)
    exposition(metrics)
    assert len(calls) == 1
    assert metrics.value("pressured_pressure_avg10_ratio", {"scope": "/gone", "kind": "some"}) is (
        None
    )
    metrics.watch_pressure("/gone", None)
    now[0] += 60
    exposition(metrics)
    assert len(calls) == 1


def test_daemon_rss_and_build_info() -> None:
    """The exposition carries the daemon's RSS and pressured_build_info."""
    metrics = Metrics(loop_name="uvloop")
    rss = metrics.value("pressured_daemon_resident_memory_bytes")
    assert rss is not None
    assert rss > 1 << 20
    text = exposition(metrics)
    assert "pressured_build_info{" in text
    assert 'loop="uvloop"' in text


def test_registries_are_private() -> None:
    """Two Metrics objects do not share samples (no global registry)."""
    first, second = Metrics(), Metrics()
    first.set_triggers("system", 3)
    assert second.value("pressured_triggers_armed", {"scope": "system"}) is None
