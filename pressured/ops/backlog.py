"""The sink that stands in for the operations sinks while the daemon arms.

The daemon arms its triggers before it builds metrics, the kill journal and hooks (a daemon
restarted in a memory crisis must react first), so a kill can happen before the sinks that
record it exist. The controller feeds this backlog from the start; once the real sinks exist,
:meth:`Backlog.hand_over` delivers what was held, in order, and the backlog goes quiet.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

import structlog

from pressured.events import KillRecord, PressureEvent
from pressured.ops import Sink

__all__ = ["Backlog"]

log = structlog.get_logger("pressured.ops.backlog")

HELD_LIMIT = 256
"""Far more than start-up can produce (events are paced, kills cool down); the oldest go first
if a broken start-up ever holds more."""


class Backlog:
    """A :class:`~pressured.ops.Sink` that holds events and kill records until handed over."""

    def __init__(self, limit: int = HELD_LIMIT) -> None:
        self._held: deque[PressureEvent | KillRecord] = deque(maxlen=limit)
        self._holding = True
        self.dropped = 0

    def _hold(self, item: PressureEvent | KillRecord) -> None:
        if not self._holding:
            return
        if len(self._held) == self._held.maxlen:
            self.dropped += 1
        self._held.append(item)

    async def on_pressure(self, event: PressureEvent) -> None:
        self._hold(event)

    async def on_kill(self, record: KillRecord) -> None:
        self._hold(record)

    async def aclose(self) -> None:
        self._holding = False
        self._held.clear()

    async def hand_over(self, sinks: Sequence[Sink], timeout_s: float) -> None:
        """Deliver everything held to ``sinks``, in order, each call bounded by ``timeout_s``
        and isolated (a failing sink is logged, as the controller does); then stop holding.

        Items published while this awaits are held and delivered too. The caller must attach
        ``sinks`` to the controller right after this returns, with no ``await`` in between,
        so that nothing falls between the backlog and the sinks.
        """
        while self._held:
            item = self._held.popleft()
            for sink in sinks:
                try:
                    async with asyncio.timeout(timeout_s):
                        if isinstance(item, KillRecord):
                            await sink.on_kill(item)
                        else:
                            await sink.on_pressure(item)
                except Exception as exc:
                    log.warning("sink.failed", sink=type(sink).__name__, error=repr(exc))
        self._holding = False
        if self.dropped:
            log.warning("sink.backlog_dropped", dropped=self.dropped)
