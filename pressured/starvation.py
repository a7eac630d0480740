"""The starvation check: notice unprivileged triggers silenced by a frequent reader.

Reading a group's pressure file pushes back the 2 s tick on which unprivileged PSI triggers
are checked (docs/design.md, "Readers starve unprivileged triggers"), so a monitoring agent
scraping it every few milliseconds leaves the scope with no events at all while it thrashes.
Every ``interval_s`` (>= 10 s, so the check itself starves nothing) this compares the scope's
cumulative stall with the trigger events seen: stall past a level's ratio with no event means
starvation. It says so loudly and offers the scope an event of its own, so the pressure is
acted on anyway. Privileged triggers (the kernel's real-time poller) cannot be starved: the
scope does not run the check for them.

A faster reader (every 2-3 ms here) also **freezes the stall total** the check reads: the
scope thrashed at 290,000-340,000 refaults/s while its `total` grew 0.07-0.28 % of the time
(docs/design.md, "Readers can also freeze the stall total"). So the check also reads the
scope's cumulative refaults (``memory.stat``, which no reader can hold back): a scope
refaulting at ``FROZEN_REFAULT_FACTOR`` times the episode's recheck rate or more, whose stall
grew less than ``FROZEN_STALL_US_PER_REFAULT`` per refault, has a frozen total, and is treated
as starved. Real thrash here stalls 0.5-0.9 us per refault; a frozen total, 0.002-0.008.
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

FROZEN_REFAULT_FACTOR = 10
"""A frozen total is judged only at this many times the recheck's refault rate or more (10,000
pages/s by default): fast enough that real thrash stalls far past the trigger's ratio."""
FROZEN_STALL_US_PER_REFAULT = 0.05
"""Less stall than this per refault means the total is not counting: measured here, real
thrash stalls 0.5-0.9 us per refault, a total frozen by a 2-3 ms reader 0.002-0.008 us."""

Refaults = Callable[[], "tuple[int, float] | None"]
"""The scope's (cumulative refaults, monotonic time of the reading), or None if unreadable.
Called on the loop thread, as ``read_pressure`` is: a hop to a worker thread would wake two
more threads on every idle check (measured: 6 wake-ups a minute became 31-41)."""


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
        refaults: Refaults | None = None,
        refaults_per_s: float = 1000.0,
    ) -> None:
        self.scope = scope
        self.interval_s = interval_s
        self._read_pressure = read_pressure
        self._armed = armed
        self._fired = fired
        self._on_starved = on_starved
        self._refaults = refaults
        self.frozen_refaults_per_s = refaults_per_s * FROZEN_REFAULT_FACTOR

    async def run(self) -> None:
        """Check every ``interval_s`` until cancelled."""
        last, last_at, last_fired = self._read_pressure(), time.monotonic(), self._fired()
        last_refaults = self._read_refaults()
        while True:
            await asyncio.sleep(self.interval_s)
            current, now, fired = self._read_pressure(), time.monotonic(), self._fired()
            refaults = self._read_refaults()
            if current is not None and last is not None and fired == last_fired:
                event = self.starved(last, current, now - last_at) or self.frozen(
                    last, current, last_refaults, refaults
                )
                if event is not None:
                    self._on_starved(event)
            last, last_at, last_fired, last_refaults = current, now, fired, refaults

    def _read_refaults(self) -> tuple[int, float] | None:
        return None if self._refaults is None else self._refaults()

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
            return self._starved(
                armed,
                current,
                elapsed_s,
                "stall grew past the trigger's threshold but no event came: something "
                "reading this pressure file often (a monitoring agent?) is starving "
                "unprivileged triggers; acting on it now.",
                stall_ratio=ratio,
            )
        return None

    def frozen(
        self,
        last: psi.Pressure,
        current: psi.Pressure,
        last_refaults: tuple[int, float] | None,
        refaults: tuple[int, float] | None,
    ) -> PressureEvent | None:
        """The event to act on when the scope refaulted fast while its stall total barely
        moved (a reader froze it; see the module), between two silent readings; else None.
        Judged on the first armed level (``some`` by default): a frozen total is frozen for
        every level."""
        armed = next(iter(self._armed()), None)
        if armed is None or last_refaults is None or refaults is None:
            return None
        elapsed_s = refaults[1] - last_refaults[1]
        count = refaults[0] - last_refaults[0]
        now_line, then_line = current.line(armed.effective.kind), last.line(armed.effective.kind)
        if elapsed_s <= 0 or count <= 0 or now_line is None or then_line is None:
            return None
        rate = count / elapsed_s
        stall_us = max(0, now_line.total_us - then_line.total_us)
        if rate < self.frozen_refaults_per_s or stall_us >= count * FROZEN_STALL_US_PER_REFAULT:
            return None
        return self._starved(
            armed,
            current,
            elapsed_s,
            "the scope refaulted fast while its stall total barely grew: something reading "
            "this pressure file every few milliseconds froze the total and starves the "
            "triggers; acting on the refaults now.",
            stall_ratio=stall_us / (elapsed_s * 1e6),
            refaults_per_s=rate,
            stall_us_per_refault=stall_us / count,
        )

    def _starved(
        self,
        armed: ArmedTrigger,
        current: psi.Pressure,
        elapsed_s: float,
        why: str,
        **figures: float,
    ) -> PressureEvent:
        """Say so loudly (one ``trigger.starved`` line with ``figures``), and the event."""
        log.error(
            "trigger.starved",
            scope=self.scope,
            level=armed.level,
            trigger_ratio=round(armed.effective.stall_ratio, 4),
            interval_s=self.interval_s,
            elapsed_s=round(elapsed_s, 3),
            privileged=False,
            detail=why + " Grant CAP_SYS_RESOURCE or stop the frequent reader.",
            **{name: round(value, 4) for name, value in figures.items()},
        )
        return PressureEvent(
            scope=self.scope,
            level=armed.level,
            source=EventSource.STARVATION,
            trigger=armed.effective,
            pressure=current,
            detail={
                name: figures[name] for name in ("stall_ratio", "refaults_per_s") if name in figures
            },
        )
