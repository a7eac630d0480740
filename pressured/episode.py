"""An episode: what a scope does between the first event of a pressure spell and the quiet.

After an event the scope stays in an *episode* for one trigger window and re-evaluates every
``recheck_interval_ms`` while the scope keeps thrashing. The evidence is the refault rate
(pages evicted and needed again, the main source of memory stall: ``workingset_refault_*`` in
the group's ``memory.stat`` or in ``/proc/vmstat``), never the watched group's own pressure
file: reading that at short intervals would starve its unprivileged triggers (docs/design.md). A
memcg at its limit reclaims page cache all the time without anyone stalling, so limit hits
and scans are not evidence; refaults are.

Each event of the episode (the first, any queued one, any recheck) goes to the scope's
``handle`` (pressured/scope.py), which decides and acts on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from pressured.events import EventSource, PressureEvent
from pressured.kernel.cgroupfs import Cgroup

log = structlog.get_logger("pressured.episode")

_REFAULT_KEYS = (
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_refault",  # kernels before 5.9 had one counter
)

RefaultReading = tuple[int, float]
"""(cumulative refaults, monotonic time of the reading)."""


def read_refaults(cgroup: Cgroup | None, proc_root: str) -> int:
    """Cumulative refaults of the scope (hierarchical for a cgroup). Cheap, and touches no
    pressure file."""
    if cgroup is not None:
        stat = cgroup.memory_stat()
        # v1 memory.stat keeps the hierarchical sums under total_*; v2's are hierarchical.
        total = sum(stat.get(f"total_{key}", 0) for key in _REFAULT_KEYS)
        return total or sum(stat.get(key, 0) for key in _REFAULT_KEYS)
    total = 0
    with open(f"{proc_root}/vmstat", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(" ")
            if key in _REFAULT_KEYS:
                total += int(value)
    return total


@dataclass(frozen=True, slots=True)
class EpisodeRules:
    window_s: float
    """How long the episode lasts after its latest handled event (the trigger window)."""
    recheck_interval_s: float
    refaults_per_s: float
    """A refault rate at or above this during the episode is a new (recheck) event."""


async def follow_episode(
    first: PressureEvent,
    *,
    number: int,
    rules: EpisodeRules,
    queue: asyncio.Queue[PressureEvent],
    handle: Callable[[PressureEvent], Awaitable[object]],
    refaults: Callable[[], Awaitable[RefaultReading | None]],
    paced: Callable[[], bool],
    scope: str,
    dying: Callable[[], bool] = lambda: False,
) -> None:
    """Handle ``first``, then every queued event and every recheck until one window passes
    with neither; return when the episode is over."""
    event: PressureEvent | None = first
    ends = time.monotonic() + rules.window_s
    # No refault reading before the first decision: the one after it replaces it at once, and
    # it put a memory.stat read through the I/O pool in front of every first decision.
    baseline: RefaultReading | None = None
    while True:
        if event is not None:
            ends = time.monotonic() + rules.window_s
            await handle(event)
            baseline = await refaults()
        remaining = ends - time.monotonic()
        if remaining <= 0:
            log.debug("episode.ended", scope=scope, episode=number)
            return
        try:
            async with asyncio.timeout(min(rules.recheck_interval_s, remaining)):
                event = await queue.get()
            continue
        except TimeoutError:
            event = None
        if dying():
            # A victim killed and reaped but not yet exited: the faults it takes on its way
            # out are no evidence against anyone else (a bystander died of them in a soak).
            baseline = await refaults()
            continue
        if paced():
            # A kill in flight or a cooldown: no recheck acts, and the rate is measured afresh
            # afterwards, not over the cooldown, when the kill's own aftermath (the victim's
            # exit, its pages) still refaults: acting on that took a bystander by size in CI.
            baseline = None
            continue
        current = await refaults()
        if current is not None and baseline is not None:
            rate = (current[0] - baseline[0]) / max(1e-3, current[1] - baseline[1])
            if rate >= rules.refaults_per_s:
                event = PressureEvent(
                    scope=scope,
                    level=first.level,
                    source=EventSource.RECHECK,
                    trigger=first.trigger,
                    episode=number,
                    detail={"refaults_per_s": round(rate, 1)},
                )
        baseline = current
