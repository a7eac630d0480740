"""The memory-availability monitor: a polling fallback and a second opinion beside PSI.

System scope: earlyoom's rule, act when MemAvailable *and* SwapFree are both below their
percentages (a host without swap counts as swap exhausted). Cgroup scope: usage against the
limit. It polls, so the interval adapts: near the threshold it checks every
``min_interval_ms``, far away it relaxes towards ``max_interval_ms``. Off unless configured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import structlog

from pressured.config import AvailabilitySettings
from pressured.errors import KernelError
from pressured.events import EventSource, PressureEvent
from pressured.kernel import procfs
from pressured.kernel.cgroupfs import UNLIMITED, Cgroup
from pressured.snapshot import SystemMemory

log = structlog.get_logger("pressured.availability")


@dataclass(frozen=True, slots=True)
class Reading:
    low: bool
    distance: float
    """How far from acting, 0..1 (0 = at the threshold)."""
    figures: dict[str, float]


def evaluate_system(memory: SystemMemory, settings: AvailabilitySettings) -> Reading:
    avail = memory.available_percent
    swap = memory.swap_free_percent
    low = avail <= settings.mem_available_percent and swap <= settings.swap_free_percent
    distance = max(0.0, avail - settings.mem_available_percent) / 100.0
    return Reading(low, distance, {"mem_available_percent": avail, "swap_free_percent": swap})


def evaluate_cgroup(current: int, limit: int, settings: AvailabilitySettings) -> Reading:
    if limit == UNLIMITED or limit <= 0:
        return Reading(False, 1.0, {"usage_bytes": float(current)})
    usage = 100.0 * current / limit
    low = usage >= settings.usage_percent
    distance = max(0.0, settings.usage_percent - usage) / 100.0
    return Reading(low, distance, {"usage_percent": usage, "usage_bytes": float(current)})


def next_interval_s(distance: float, settings: AvailabilitySettings) -> float:
    """Scale linearly from min (at the threshold) to max (20 points or more away)."""
    share = min(1.0, distance / 0.20)
    low, high = settings.min_interval_ms, settings.max_interval_ms
    return (low + (high - low) * share) / 1000


class AvailabilityMonitor:
    def __init__(
        self,
        settings: AvailabilitySettings,
        *,
        scope: str,
        group: Cgroup | None,
        proc_root: str,
        io_executor: Executor,
        on_low: Callable[[PressureEvent], None],
    ) -> None:
        self.settings = settings
        self.scope = scope
        self.group = group
        self.proc_root = proc_root
        self.io = io_executor
        self.on_low = on_low
        self.readings = 0

    def read(self) -> Reading:
        if self.group is not None:
            figures = self.group.memory()
            return evaluate_cgroup(figures.current_bytes, figures.limit_bytes, self.settings)
        memory = SystemMemory.from_meminfo(procfs.read_meminfo(self.proc_root))
        return evaluate_system(memory, self.settings)

    async def run(self) -> None:
        """Poll until cancelled. Returns (after saying why) when the scope has no memory
        accounting at all: there is nothing to poll, and asking again would change nothing."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                reading = await loop.run_in_executor(self.io, self.read)
            except KernelError as exc:
                if self.group is not None and not self.group.exists():
                    # The group is gone (for now): no accounting to read is no verdict yet.
                    await asyncio.sleep(self.settings.max_interval_ms / 1000)
                    continue
                log.error(
                    "availability.disabled",
                    scope=self.scope,
                    error=str(exc),
                    detail="no memory accounting reaches this scope (on a hybrid host, set "
                    "the scope's memcg_v1); PSI triggers still watch it",
                )
                return
            except (OSError, ValueError) as exc:
                # A group removed for a moment, a half-written file: try again later.
                log.debug("availability.unreadable", scope=self.scope, error=repr(exc))
                await asyncio.sleep(self.settings.max_interval_ms / 1000)
                continue
            self.readings += 1
            if reading.low:
                self.on_low(
                    PressureEvent(
                        scope=self.scope,
                        level=self.settings.level,
                        source=EventSource.MEMORY,
                        detail=reading.figures,
                    )
                )
            await asyncio.sleep(next_interval_s(reading.distance, self.settings))
