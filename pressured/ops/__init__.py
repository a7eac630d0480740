"""Operations: what a running daemon shows and tells the world about itself.

Every piece here is a *sink* the controller feeds, or a small server/helper it starts:

- :class:`~pressured.ops.metrics.Metrics`: Prometheus metrics on a private registry.
- :class:`~pressured.ops.http.OpsServer`: ``/metrics``, ``/healthz`` and ``/status``.
- :class:`~pressured.ops.journal.KillJournal`: one durable JSON line per kill.
- :class:`~pressured.ops.hooks.HookRunner`: pre-kill and post-kill programs or HTTP posts.
- :mod:`~pressured.ops.sdnotify`: systemd readiness, watchdog and status notifications.

The controller calls every sink for every event and record, time-limits the call and catches
what it raises; each sink here nevertheless swallows (logs and counts) its own operational
failures, so one broken disk or hook endpoint never disturbs another sink or a kill.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pressured.events import KillRecord, PressureEvent

__all__ = ["Sink"]


@runtime_checkable
class Sink(Protocol):
    """**Protocol:** something that wants to hear about pressure events and kills.

    Implementations must not raise for operational failures (disk full, endpoint down): log,
    count and return. They should return quickly; the controller bounds each call anyway.
    """

    async def on_pressure(self, event: PressureEvent) -> None:
        """Called once per pressure event, before any decision is taken on it."""

    async def on_kill(self, record: KillRecord) -> None:
        """Called once per kill record (including dry-run and refused kills)."""

    async def aclose(self) -> None:
        """Release resources; called once at shutdown, after the last event."""
