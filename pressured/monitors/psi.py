"""PSI trigger fds on the asyncio loop, so the loop sleeps until the kernel says something.

A PSI trigger fd is *always* readable (EPOLLIN); only EPOLLPRI marks a trigger event, and
polling the fd consumes that event. asyncio's ``add_reader`` (stdlib and uvloop) registers
EPOLLIN, so the fd itself would wake the loop forever. One shared inner epoll for several
triggers loses *which* trigger fired (the outer loop's readiness check consumes the event
before we could read it back). What works, on both loops: **one inner epoll per trigger fd**,
registered for EPOLLPRI only, whose own readability *is* the event. After the callback the
inner epoll is no longer readable (the PSI event was consumed), so idle means no wake-ups.

A trigger on a cgroup that is removed (``rmdir``) reports EPOLLPRI|EPOLLERR on every poll,
forever: left registered it would wake the loop on every iteration. EPOLLERR is always
reported, whatever the mask, so the inner epoll shows it; the trigger is then unregistered and
closed at once and ``on_gone`` is told (the scope waits for the group to come back).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pressured.events import PRESSURE_LEVEL_KEY
from pressured.kernel import psi
from pressured.kernel.psi import TriggerSpec, WindowAdjustment


@dataclass(frozen=True, slots=True)
class ArmedTrigger:
    """A trigger the kernel accepted: what was asked for, what is in force, and where."""

    level: str
    path: str
    requested: TriggerSpec
    effective: TriggerSpec
    adjustment: WindowAdjustment | None

    def describe(self) -> dict[str, str | float | bool]:
        return {
            PRESSURE_LEVEL_KEY: self.level,
            "path": self.path,
            "kind": self.effective.kind,
            "threshold_ms": self.effective.threshold_us / 1000,
            "window_ms": self.effective.window_us / 1000,
            "adjusted": self.adjustment is not None,
        }


@dataclass
class _Registration:
    trigger: ArmedTrigger
    trigger_fd: int
    inner: select.epoll
    fired: int = field(default=0)


class TriggerSet:
    """Arms PSI triggers on one pressure file and calls ``on_fire(level)`` from the loop.

    Create it inside a running loop; ``close()`` (idempotent) removes the readers and closes
    every fd. Opening a trigger is a short synchronous write the kernel answers at once.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_fire: Callable[[ArmedTrigger], None],
        on_gone: Callable[[ArmedTrigger], None] | None = None,
    ) -> None:
        self._loop = loop
        self._on_fire = on_fire
        self._on_gone = on_gone
        self._registrations: list[_Registration] = []
        self._closed = False

    @property
    def armed(self) -> tuple[ArmedTrigger, ...]:
        return tuple(reg.trigger for reg in self._registrations)

    def fired_counts(self) -> dict[str, int]:
        return {reg.trigger.level: reg.fired for reg in self._registrations}

    def arm(
        self, level: str, path: str | os.PathLike[str], spec: TriggerSpec, *, privileged: bool
    ) -> ArmedTrigger:
        """Legalize ``spec`` for this privilege, open the trigger and watch it."""
        if self._closed:
            raise RuntimeError("TriggerSet is closed")
        effective, adjustment = psi.legalize(spec, privileged=privileged)
        trigger_fd = psi.open_trigger(path, effective)
        try:
            inner = select.epoll(1)
        except OSError:
            os.close(trigger_fd)
            raise
        try:
            inner.register(trigger_fd, select.EPOLLPRI)
            armed = ArmedTrigger(level, str(Path(path)), spec, effective, adjustment)
            registration = _Registration(armed, trigger_fd, inner)
            self._loop.add_reader(inner.fileno(), self._fired, registration)
        except BaseException:
            inner.close()
            os.close(trigger_fd)
            raise
        self._registrations.append(registration)
        return armed

    def _fired(self, registration: _Registration) -> None:
        if self._closed or registration not in self._registrations:
            return  # closed by an earlier callback of the same loop iteration
        # The inner epoll being readable is the event. Polling it once more clears anything
        # left; its answer is not relied on for EPOLLPRI (the outer check may have consumed
        # the event), only for EPOLLERR, which stays set once the group is gone.
        ready: list[tuple[int, int]] = []
        with contextlib.suppress(OSError):
            ready = registration.inner.poll(0)
        if any(mask & select.EPOLLERR for _fd, mask in ready):
            self._drop(registration)
            if self._on_gone is not None:
                self._on_gone(registration.trigger)
            return
        registration.fired += 1
        self._on_fire(registration.trigger)

    def _drop(self, registration: _Registration) -> None:
        """Unregister and close one trigger (its group is gone)."""
        with contextlib.suppress(ValueError):
            self._registrations.remove(registration)
        self._release(registration)

    def _release(self, registration: _Registration) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(registration.inner.fileno())
        with contextlib.suppress(OSError):
            registration.inner.close()
        with contextlib.suppress(OSError):
            os.close(registration.trigger_fd)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for registration in self._registrations:
            self._release(registration)
        self._registrations.clear()

    def fds(self) -> list[int]:
        """Every fd this set holds (tests count them to prove ``close`` leaks nothing)."""
        out: list[int] = []
        for registration in self._registrations:
            out.extend((registration.trigger_fd, registration.inner.fileno()))
        return out
