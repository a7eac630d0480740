"""How often anything may be killed: one pacing state per daemon, shared by every guard.

The loop's guards (one per configuration: SIGHUP builds new ones) and the watchdog thread all
kill through the same :class:`Pacing`, so a reload does not forget the last kill and a kill
from the watchdog counts against the loop's cooldown and rate limit. The state is guarded by
a lock because the watchdog thread reads and changes it while the loop is stuck.

The limits themselves (cooldown, kills per minute) are passed in by each caller from its own
settings: a reload may change them, and a failed reload must not.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]
RATE_WINDOW_S = 60.0


class Pacing:
    """In-flight kills, the settle delay after the last one, and kills in the last minute."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._kills: deque[float] = deque()
        self._in_flight = 0
        self._cooldown_until = 0.0
        self._last_finished: float | None = None

    def _why_not_locked(self, max_kills_per_minute: int) -> str | None:
        now = self._clock()
        if self._in_flight:
            return "a kill is in flight"
        if now < self._cooldown_until:
            return f"cooling down for {self._cooldown_until - now:.2f} s after the last kill"
        while self._kills and now - self._kills[0] >= RATE_WINDOW_S:
            self._kills.popleft()
        if len(self._kills) >= max_kills_per_minute:
            return f"rate limit: {max_kills_per_minute} kills in the last minute"
        return None

    def why_not_now(self, max_kills_per_minute: int) -> str | None:
        """Why no kill may start now (in flight, cooldown, rate limit), or None."""
        with self._lock:
            return self._why_not_locked(max_kills_per_minute)

    def try_start(self, max_kills_per_minute: int) -> str | None:
        """Check and start a kill in one step (for a thread racing the loop): None when the
        kill may go ahead and is now counted, else why not."""
        with self._lock:
            reason = self._why_not_locked(max_kills_per_minute)
            if reason is None:
                self._start_locked()
            return reason

    def _start_locked(self) -> None:
        self._kills.append(self._clock())
        self._in_flight += 1

    def kill_started(self) -> None:
        with self._lock:
            self._start_locked()

    def kill_finished(self, cooldown_s: float) -> None:
        """The kill is done with (memory reaped, confirmed dead or failed): settle from now."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._last_finished = self._clock()
            self._cooldown_until = self._last_finished + cooldown_s

    def seconds_since_last_kill(self) -> float | None:
        """Time since the last kill was done with, or None before the first."""
        with self._lock:
            if self._last_finished is None:
                return None
            return self._clock() - self._last_finished

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def kills_in_window(self) -> int:
        with self._lock:
            now = self._clock()
            return sum(1 for at in self._kills if now - at < RATE_WINDOW_S)
