"""Prometheus metrics for the daemon, on a private registry.

A private :class:`~prometheus_client.CollectorRegistry` (never the global one) keeps an
embedding application's own metrics apart from ours, lets two controllers live in one process
(tests do that), and gives tests ``metrics.registry`` to read values back.

Names follow the Prometheus conventions: ``_total`` counters, ``_seconds`` and ``_bytes``
units, ratios in 0..1. Label values are bounded by the configuration (scopes, levels, policy
names) or by enums (results, kinds, mrelease statuses), never by PIDs or command lines.

Pressure gauges read a pressure file at scrape time, but at most once per
``pressure_cache_s`` per scope: reading a group's pressure file pushes back the 2 s tick on
which unprivileged PSI triggers are checked, so a scraper polling every few seconds would
silence the very triggers we depend on (see docs/design.md, "Readers starve unprivileged
triggers").

The daemon's own CPU time, resident memory, open fds and start time come from
prometheus-client's :class:`~prometheus_client.ProcessCollector` under the standard
``process_*`` names every dashboard already knows. Counters and histograms export no
``_created`` series: they double the series count and no query here uses them. They are
dropped from this registry only, so an embedding application's own metrics keep theirs.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pressured import __version__
from pressured.events import PRESSURE_LEVEL_KEY, KillRecord, KillResult, PressureEvent
from pressured.kernel.psi import Pressure

__all__ = ["LATENCY_BUCKETS", "Metrics", "PressureReader"]

log = structlog.get_logger("pressured.ops.metrics")

PressureReader = Callable[[], Pressure | None]
"""Reads one scope's current pressure; may raise OSError (the scope's group vanished)."""

# From half a millisecond (a decision on a small host) to a minute (a starved victim left to
# exit on its own after mrelease lost the race): the range the design's measurements span.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
POLICY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    5.0,
)
# Metric types whose children prometheus-client gives a ``_created`` sample.
_TYPES_WITH_CREATED = frozenset({"counter", "histogram", "summary"})


class _RegistryWithoutCreated(CollectorRegistry):
    """A registry whose counters and histograms export no ``_created`` series.

    ``prometheus_client.disable_created_metrics()`` would do the same for every registry in
    the process, an embedding application's included; this keeps the choice to ours.
    """

    def collect(self) -> Iterator[Metric]:
        for metric in super().collect():
            if metric.type in _TYPES_WITH_CREATED:
                # Each collect() builds fresh Metric objects, so filtering in place is safe.
                metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


@dataclass
class _CachedPressure:
    read: PressureReader
    value: Pressure | None = None
    read_at: float | None = None


class _ScrapeTimeCollector(Collector):
    """Values computed when scraped: per-scope PSI avg10, cached (see the module docstring)."""

    def __init__(self, owner: Metrics) -> None:
        self._owner = owner

    def collect(self) -> Iterable[Metric]:
        avg10 = GaugeMetricFamily(
            "pressured_pressure_avg10_ratio",
            "Memory PSI avg10 per scope as a ratio (0..1), read at most once per cache period.",
            labels=["scope", "kind"],
        )
        for scope, pressure in self._owner.read_pressures().items():
            if pressure is None:
                continue
            avg10.add_metric([scope, "some"], pressure.some.avg10 / 100.0)
            if pressure.full is not None:
                avg10.add_metric([scope, "full"], pressure.full.avg10 / 100.0)
        yield avg10


class Metrics:
    """All of pressured's metrics. Also a :class:`~pressured.ops.Sink`.

    Feed it with ``on_pressure``/``on_kill`` (as a sink) and the ``observe_*``/``set_*``
    methods; expose ``registry`` with :class:`~pressured.ops.http.OpsServer` or
    ``prometheus_client.generate_latest(metrics.registry)``.

    Thread safety: prometheus-client metrics take their own locks, and the pressure cache
    has one, so rendering may happen on a worker thread while the loop keeps updating.
    """

    def __init__(
        self,
        *,
        pressure_cache_s: float = 10.0,
        loop_name: str = "",
        clock: Callable[[], float] = time.monotonic,
        proc_root: str = "/proc",
    ) -> None:
        # Same floor as MetricsSettings: anything shorter starves unprivileged triggers.
        self.pressure_cache_s = max(10.0, pressure_cache_s)
        self._clock = clock
        self._pressure: dict[str, _CachedPressure] = {}
        self._pressure_lock = threading.Lock()
        self.registry: CollectorRegistry = _RegistryWithoutCreated()
        r = self.registry
        # CPU seconds, resident and virtual memory, open and maximum fds, start time.
        ProcessCollector(proc=proc_root, registry=r)

        self.pressure_events = Counter(
            "pressured_pressure_events",
            "Pressure events seen, by scope, PSI level and source (psi, recheck, memory, ...).",
            ["scope", PRESSURE_LEVEL_KEY, "source"],
            registry=r,
        )
        self.kills = Counter(
            "pressured_kills",
            "Kill attempts by outcome and why (kill_reason: critical_stall, stall, "
            "pressure_after_kill, starved_trigger, low_memory, watchdog, manual); "
            "result=dry_run counts what dry-run mode would have done.",
            ["scope", "policy", "result", "kind", "kill_reason"],
            registry=r,
        )
        self.mrelease = Counter(
            "pressured_process_mrelease",
            "process_mrelease(2) outcomes by status (reaped, gone = lost the exit race, ...).",
            ["status"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "pressured_decision_seconds",
            "From the pressure event to the policy chain's decision.",
            ["scope", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decision_to_signal_seconds = Histogram(
            "pressured_decision_to_signal_seconds",
            "From the decision to the kill signal sent by the reaper thread.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.signal_to_reaped_seconds = Histogram(
            "pressured_signal_to_reaped_seconds",
            "From the kill signal to process_mrelease returning (memory released by us).",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.signal_to_exit_seconds = Histogram(
            "pressured_signal_to_exit_seconds",
            "From the kill signal to the victim's exit being seen through its pidfd.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.freed_bytes = Counter(
            "pressured_freed_bytes",
            "Resident memory of killed victims just before the kill (dry runs excluded).",
            ["scope"],
            registry=r,
        )
        self.policy_seconds = Histogram(
            "pressured_policy_duration_seconds",
            "Time one policy took to decide (including failed and timed-out runs).",
            ["policy"],
            buckets=POLICY_BUCKETS,
            registry=r,
        )
        self.scans = Counter(
            "pressured_scans",
            "Snapshots taken, by outcome: complete, partial (the scan deadline cut it short) or "
            "empty (nothing read of a scope with members).",
            ["scope", "outcome"],
            registry=r,
        )
        self.scan_problems = Counter(
            "pressured_scan_problems",
            "Files a scan could not read and cgroup errors met while scanning (each also "
            "logged as scan.problem).",
            ["scope"],
            registry=r,
        )
        self.policy_failures = Counter(
            "pressured_policy_failures",
            "Policy runs that failed, by kind (timeout, error, invalid, disabled, ...).",
            ["policy", "kind"],
            registry=r,
        )
        self.triggers_armed = Gauge(
            "pressured_triggers_armed",
            "PSI triggers currently armed, per scope.",
            ["scope"],
            registry=r,
        )
        self.hook_runs = Counter(
            "pressured_hook_runs",
            "Hook runs by stage (pre_kill, post_kill) and outcome (ok, failed, timeout).",
            ["stage", "outcome"],
            registry=r,
        )
        self.hook_seconds = Histogram(
            "pressured_hook_duration_seconds",
            "Time a hook took, up to its time limit.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.journal_errors = Counter(
            "pressured_journal_errors",
            "Kill records that could not be written to the kill journal.",
            registry=r,
        )
        self.build_info = Info(
            "pressured_build",
            "Version of pressured and of the Python running it.",
            registry=r,
        )
        self.build_info.info(
            {
                "version": __version__,
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "loop": loop_name,
            }
        )
        r.register(_ScrapeTimeCollector(self))

    # -- Sink -------------------------------------------------------------------------------

    async def on_pressure(self, event: PressureEvent) -> None:
        self.pressure_events.labels(event.scope, event.level, str(event.source)).inc()

    async def on_kill(self, record: KillRecord) -> None:
        self.record_kill(record)

    async def aclose(self) -> None:
        """Nothing to release: the registry lives as long as the object."""

    # -- called by the controller -----------------------------------------------------------

    def record_kill(self, record: KillRecord) -> None:
        """Count one kill record (the synchronous body of :meth:`on_kill`)."""
        kind = str(record.kind)
        self.kills.labels(
            record.scope, record.policy, str(record.result), kind, str(record.kill_reason)
        ).inc()
        if record.mrelease is not None:
            self.mrelease.labels(str(record.mrelease.status)).inc()
        for histogram, value_ms in (
            (self.decision_to_signal_seconds, record.decision_to_signal_ms),
            (self.signal_to_reaped_seconds, record.signal_to_reaped_ms),
            (self.signal_to_exit_seconds, record.signal_to_exit_ms),
        ):
            if value_ms is not None:
                histogram.labels(kind).observe(value_ms / 1000.0)
        if record.result is KillResult.KILLED and not record.dry_run:
            self.freed_bytes.labels(record.scope).inc(max(0, record.rss_before_bytes))

    def observe_decision(self, scope: str, duration_s: float, outcome: str) -> None:
        """One policy-chain decision: ``outcome`` is ``"kill"``, ``"none"`` or ``"error"``.

        Separate from kill records because most decisions kill nothing, and one decision may
        choose several victims (each gets its own record).
        """
        self.decision_seconds.labels(scope, outcome).observe(max(0.0, duration_s))

    def observe_scan(self, scope: str, outcome: str, problems: int) -> None:
        """One snapshot: ``outcome`` is ``"complete"``, ``"partial"`` or ``"empty"``."""
        self.scans.labels(scope, outcome).inc()
        if problems:
            self.scan_problems.labels(scope).inc(problems)

    def observe_policy(self, policy: str, duration_s: float, failure_kind: str | None) -> None:
        """One run of one policy; ``failure_kind`` None means it returned a valid decision."""
        self.policy_seconds.labels(policy).observe(max(0.0, duration_s))
        if failure_kind is not None:
            self.policy_failures.labels(policy, failure_kind).inc()

    def observe_hook(self, stage: str, outcome: str, duration_s: float) -> None:
        """Fed by :class:`~pressured.ops.hooks.HookRunner` (pass it as ``observer``)."""
        self.hook_runs.labels(stage, outcome).inc()
        self.hook_seconds.labels(stage).observe(max(0.0, duration_s))

    def journal_failed(self) -> None:
        """Fed by :class:`~pressured.ops.journal.KillJournal` (pass it as ``on_error``)."""
        self.journal_errors.inc()

    def set_triggers(self, scope: str, count: int) -> None:
        self.triggers_armed.labels(scope).set(count)

    def watch_pressure(self, scope: str, read: PressureReader | None) -> None:
        """Show ``read()``'s avg10 for ``scope``; ``None`` stops showing it (scope removed).

        ``read`` is called from whichever thread renders the exposition, at most once per
        ``pressure_cache_s``; it should be a plain file read (no asyncio).
        """
        with self._pressure_lock:
            if read is None:
                self._pressure.pop(scope, None)
            else:
                self._pressure[scope] = _CachedPressure(read)

    # -- scrape-time values -----------------------------------------------------------------

    def read_pressures(self) -> Mapping[str, Pressure | None]:
        """Current (cached) pressure per watched scope; a failed read shows as None."""
        now = self._clock()
        result: dict[str, Pressure | None] = {}
        with self._pressure_lock:
            for scope, entry in self._pressure.items():
                fresh = entry.read_at is not None and now - entry.read_at < self.pressure_cache_s
                if not fresh:
                    # Stamp before reading: a failing read is not retried until the period
                    # ends either, so a vanished group cannot make us read in a tight loop.
                    entry.read_at = now
                    try:
                        entry.value = entry.read()
                    except (OSError, ValueError) as exc:
                        log.warning("metrics.pressure_read_failed", scope=scope, error=str(exc))
                        entry.value = None
                result[scope] = entry.value
        return result

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """A sample's current value, for tests and ``pressured status``: ``value(
        "pressured_kills_total", {"result": "killed", ...})``."""
        return self.registry.get_sample_value(name, dict(labels or {}))
