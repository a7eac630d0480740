"""The starvation check: notice unprivileged triggers silenced by a frequent reader.

Reading a group's pressure file pushes back the 2 s tick on which unprivileged PSI triggers
are checked (docs/design.md, "Readers starve unprivileged triggers"), so a monitoring agent
scraping it every few milliseconds leaves the scope with no events at all while it thrashes.
Every ``interval_s`` (>= 10 s, so the check itself starves nothing) this compares the scope's
cumulative stall with the trigger events seen: stall past a level's ratio with no event means
starvation. It says so loudly and offers the scope an event of its own, so the pressure is
acted on anyway. Privileged triggers (the kernel's real-time poller) cannot be starved: the
scope does not run the check for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from pressured.events import EventSource, PressureEvent
from pressured.kernel import psi
from pressured.monitors.psi import ArmedTrigger

log = structlog.get_logger("pressured.starvation")


class StarvationCheck:
    def __init__(
        self,
        *,
        scope: str,
        interval_s: float,
        read_pressure: Callable[[], psi.Pressure | None],
        armed: Callable[[], tuple[ArmedTrigger, ...]],
        fired: Callable[[], int],
        on_starved: Callable[[PressureEvent], None],
    ) -> None:
        self.scope = scope
        self.interval_s = interval_s
        self._read_pressure = read_pressure
        self._armed = armed
        self._fired = fired
        self._on_starved = on_starved

    async def run(self) -> None:
        """Check every ``interval_s`` until cancelled."""
        last, last_at, last_fired = self._read_pressure(), time.monotonic(), self._fired()
        while True:
            await asyncio.sleep(self.interval_s)
            current, now, fired = self._read_pressure(), time.monotonic(), self._fired()
            if current is not None and last is not None and fired == last_fired:
                event = self.starved(last, current, now - last_at)
                if event is not None:
                    self._on_starved(event)
            last, last_at, last_fired = current, now, fired

    def starved(
        self, last: psi.Pressure, current: psi.Pressure, elapsed_s: float
    ) -> PressureEvent | None:
        """The event to act on when a level's stall grew past its trigger's ratio over the
        ``elapsed_s`` between two readings with no trigger event in between, or None.

        The ratio is taken over the time that really passed, not the nominal interval: a
        check that wakes late (a busy loop, a frozen or stopped daemon) would otherwise divide
        the stall of a longer stretch by a shorter one and report starvation, and act, on a
        stall below the trigger's threshold.
        """
        for armed in self._armed():
            now_line, then_line = (
                current.line(armed.effective.kind),
                last.line(armed.effective.kind),
            )
            if now_line is None or then_line is None:
                continue
            ratio = (now_line.total_us - then_line.total_us) / (elapsed_s * 1e6)
            if ratio < armed.effective.stall_ratio:
                continue
            log.error(
                "trigger.starved",
                scope=self.scope,
                level=armed.level,
                stall_ratio=round(ratio, 4),
                trigger_ratio=round(armed.effective.stall_ratio, 4),
                interval_s=self.interval_s,
                elapsed_s=round(elapsed_s, 3),
                privileged=False,
                detail="stall grew past the trigger's threshold but no event came: "
                "something reading this pressure file often (a monitoring agent?) "
                "is starving unprivileged triggers; acting on it now. Grant "
                "CAP_SYS_RESOURCE or stop the frequent reader.",
            )
            return PressureEvent(
                scope=self.scope,
                level=armed.level,
                source=EventSource.STARVATION,
                trigger=armed.effective,
                pressure=current,
                detail={"stall_ratio": ratio},
            )
        return None
