"""Metrics: labels after feeding events and kill records, the pressure cache, build info."""

from __future__ import annotations

import json
import os
import resource
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pressured.events import (
    EventSource,
    KillReason,
    KillRecord,
    KillResult,
    PressureEvent,
    VictimKind,
)
from pressured.kernel.pidfd import MreleaseResult, MreleaseStatus
from pressured.kernel.psi import Pressure, PressureLine
from pressured.ops import Sink
from pressured.ops.journal import read_journal
from pressured.ops.metrics import Metrics
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup
from tests.test_monitoring import all_queries, exported_series, unknown_metrics

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
    labels = {"scope": "/jobs", "pressure_level": "full", "source": "psi"}
    assert metrics.value("pressured_pressure_events_total", labels) == 2.0
    assert (
        'pressured_pressure_events_total{pressure_level="full",scope="/jobs",source="psi"} 2.0'
        in exposition(metrics)
    )


def test_kill_record_fills_counters_and_histograms(run_async: Runner) -> None:
    """A killed victim shows in kills, mrelease, freed bytes and the timing histograms."""
    metrics = Metrics()
    run_async(metrics.on_kill(make_record(kill_reason=KillReason.CRITICAL_STALL)))
    kill_labels = {
        "scope": "system",
        "policy": "oom_score",
        "result": "killed",
        "kind": "process",
        "kill_reason": "critical_stall",
    }
    assert metrics.value("pressured_kills_total", kill_labels) == 1.0
    assert metrics.value("pressured_process_mrelease_total", {"status": "reaped"}) == 1.0
    assert metrics.value("pressured_freed_bytes_total", {"scope": "system"}) == 512 << 20
    reaped = {"kind": "process", "le": "0.05"}
    assert metrics.value("pressured_signal_to_reaped_seconds_bucket", reaped) == 1.0
    assert metrics.value("pressured_signal_to_exit_seconds_sum", {"kind": "process"}) == 0.06
    assert metrics.value("pressured_decision_to_signal_seconds_count", {"kind": "process"}) == 1
    text = exposition(metrics)
    assert (
        'pressured_kills_total{kill_reason="critical_stall",kind="process",policy="oom_score",'
        'result="killed",scope="system"}' in text
    )


def test_dry_run_kill_frees_nothing(run_async: Runner) -> None:
    """A dry-run record is counted as such and adds no freed bytes."""
    metrics = Metrics()
    record = make_record(result=KillResult.DRY_RUN, dry_run=True, mrelease=None)
    run_async(metrics.on_kill(record))
    labels = {
        "scope": "system",
        "policy": "oom_score",
        "result": "dry_run",
        "kind": "process",
        "kill_reason": "manual",
    }
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


def test_build_info_is_exported() -> None:
    """The exposition carries pressured_build_info with the loop's name."""
    text = exposition(Metrics(loop_name="uvloop"))
    assert "pressured_build_info{" in text
    assert 'loop="uvloop"' in text


def test_process_collector_counts_the_daemons_own_fds() -> None:
    """process_open_fds is the real count of our fds: opening 20 more shows 20 more (the
    hand-made RSS gauge had no fds, CPU or start time at all)."""
    metrics = Metrics()
    before = metrics.value("process_open_fds")
    assert before is not None
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(20)]
    try:
        assert metrics.value("process_open_fds") == before + 20
    finally:
        for fd in fds:
            os.close(fd)
    assert metrics.value("process_open_fds") == before


def test_process_collector_reports_start_time_cpu_and_memory() -> None:
    """Start time matches /proc/self/stat's start; CPU seconds and RSS are there and real."""
    metrics = Metrics()
    started = metrics.value("process_start_time_seconds")
    assert started is not None
    assert abs(started - start_time_from_proc()) < 1.0
    assert (metrics.value("process_resident_memory_bytes") or 0) > 1 << 20
    assert metrics.value("process_cpu_seconds_total") is not None
    assert metrics.value("process_max_fds") == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert "pressured_daemon_resident_memory_bytes" not in exposition(metrics)


def start_time_from_proc() -> float:
    """Our start as wall-clock seconds: boot time plus /proc/self/stat's starttime ticks."""
    stat = Path("/proc/self/stat").read_text()
    ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    boot = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def test_no_created_series_but_other_registries_keep_theirs(run_async: Runner) -> None:
    """Counters and histograms export no _created samples; an embedding application's own
    registry is left alone (no process-wide switch)."""
    metrics = Metrics()
    run_async(metrics.on_kill(make_record()))
    metrics.observe_policy("largest", 0.002, "timeout")
    text = exposition(metrics)
    assert "pressured_kills_total{" in text
    assert "_created" not in text
    theirs = CollectorRegistry()
    Counter("app_requests", "An embedding application's counter.", registry=theirs).inc()
    assert "app_requests_created" in generate_latest(theirs).decode()


def test_kills_are_labelled_with_their_reason_word(run_async: Runner) -> None:
    """Each kill reason word becomes its own kill_reason label value."""
    metrics = Metrics()
    for reason in KillReason:
        run_async(metrics.on_kill(make_record(kill_reason=reason)))
    for reason in KillReason:
        labels = {
            "scope": "system",
            "policy": "oom_score",
            "result": "killed",
            "kind": "process",
            "kill_reason": str(reason),
        }
        assert metrics.value("pressured_kills_total", labels) == 1.0, reason


def test_registries_are_private() -> None:
    """Two Metrics objects do not share samples (no global registry)."""
    first, second = Metrics(), Metrics()
    first.set_triggers("system", 3)
    assert second.value("pressured_triggers_armed", {"scope": "system"}) is None


# -- a real daemon ----------------------------------------------------------------------------


def _env_file(path: Path, timeout_s: float = 10.0) -> dict[str, str]:
    """The ``env`` dump a hook wrote, once it is complete (the hook runs in the background)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        time.sleep(0.05)
    raise TimeoutError(f"no hook output in {path}")


def _first_journal_entry(path: Path, timeout_s: float = 10.0) -> dict[str, Any]:
    """The journal's first record, once the sink (after the log line) has written it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and (entries := read_journal(path)):
            return entries[0]
        time.sleep(0.05)
    raise TimeoutError(f"no journal record in {path}")


@pytest.mark.kernel
@pytest.mark.pressure
def test_kill_reason_and_pressure_level_agree_everywhere(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path
) -> None:
    """A real kill says why in one word and names the PSI level pressure_level in the log line,
    the journal, both hooks' environments, /status and the kills metric; the running daemon's
    /metrics has every metric the example dashboard and alerts query."""
    journal = tmp_path / "kills.jsonl"
    pre_env, post_env = tmp_path / "pre.env", tmp_path / "post.env"
    config = write_config(
        tmp_path / "p.toml",
        scope_config(scratch.path, scratch.memcg_path)
        + f'\n[journal]\npath = "{journal}"\n'
        + f'\n[[hooks.pre_kill]]\ncommand = ["/bin/sh", "-c", "env > {pre_env}"]\n'
        + "timeout_ms = 3000\n"
        + f'\n[[hooks.post_kill]]\ncommand = ["/bin/sh", "-c", "env > {post_env}"]\n'
        + "timeout_ms = 3000\n",
    )
    with Daemon(config) as daemon:
        url = daemon.wait_for("ops.listening", 20)["url"]
        daemon.wait_for("controller.ready", 20)
        scratch.spawn_workload("thrash", thrash_file)
        killed = daemon.wait_for("victim.killed", 40)
        # The scope's only level is a "some" trigger, and the first kill of an episode is
        # decided on the trigger's own event.
        assert killed["kill_reason"] == "stall"
        assert killed["pressure_level"] == "some"
        assert killed["level"] == "warning"  # the log line's severity keeps its own name
        entry = _first_journal_entry(journal)
        assert (entry["kill_reason"], entry["pressure_level"]) == ("stall", "some")
        assert "level" not in entry
        for env in (_env_file(pre_env), _env_file(post_env)):
            assert env["PRESSURED_KILL_REASON"] == "stall"
            assert env["PRESSURED_PRESSURE_LEVEL"] == "some"
            assert "PRESSURED_LEVEL" not in env
        with urllib.request.urlopen(f"{url}/status", timeout=5) as response:  # noqa: S310
            status = json.loads(response.read())
        assert status["last_kills"][-1]["pressure_level"] == "some"
        assert status["scopes"][0]["triggers"][0]["pressure_level"] == "some"
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        labels = {
            "scope": scratch.path,
            "policy": "oom_score",
            "result": "killed",
            "kind": "process",
            "kill_reason": "stall",
        }
        families = {f.name: f for f in text_string_to_metric_families(text)}
        kills = [s for s in families["pressured_kills"].samples if s.name.endswith("_total")]
        assert [(s.labels, s.value) for s in kills] == [(labels, 1.0)]
        assert "_created" not in text
        series = exported_series(text)
        assert unknown_metrics(all_queries(), series) == {}
        assert daemon.stop() == 0
