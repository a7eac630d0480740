"""Waiting, on the loop, for a removed cgroup to be created again.

A watched group can go away and come back (a service restarted, a pod recreated). Its PSI
triggers die with it (``monitors/psi.py`` notices EPOLLERR and closes them); this waits for
the directory to exist again, event-driven: an inotify fd on the loop
(``kernel/inotify.py``), no polling. When the group is back it calls ``arm``; if that fails
while the group is there (no fd left, say) there is no event to wait for, so it retries on a
timer whose delay doubles up to a minute: it cannot spin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import structlog

from pressured.kernel import inotify

log = structlog.get_logger("pressured.presence")

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


class GroupReturn:
    """Calls ``arm()`` once ``directory`` exists again (and ``arm`` succeeds)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        directory: Path,
        arm: Callable[[], None],
        *,
        scope: str,
    ) -> None:
        self._loop = loop
        self.directory = directory
        self._arm = arm
        self.scope = scope
        self._waiter: inotify.PathWaiter | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay_s = RETRY_FIRST_S
        self.done = False

    @property
    def waiting(self) -> bool:
        return not self.done and (self._waiter is not None or self._retry is not None)

    def start(self) -> None:
        self._wait()

    def _wait(self) -> None:
        self._retry = None
        try:
            waiter = inotify.PathWaiter(self.directory)
        except OSError as exc:  # no fd for inotify (EMFILE): try again later
            self._retry_later(self._wait, "scope.wait_failed", exc)
            return
        self._waiter = waiter
        self._loop.add_reader(waiter.fileno(), self._changed)
        self._changed()  # it may be back already

    def _changed(self) -> None:
        waiter = self._waiter
        if waiter is None or not waiter.check():
            return
        self._stop_waiting()
        self._try_arm()

    def _try_arm(self) -> None:
        self._retry = None
        try:
            self._arm()
        except Exception as exc:
            if not self.directory.is_dir():
                self._wait()  # gone again before it could be armed
            else:
                self._retry_later(self._try_arm, "scope.rearm_failed", exc)
            return
        self.done = True

    def _retry_later(self, action: Callable[[], None], event: str, exc: BaseException) -> None:
        delay, self._retry_delay_s = self._retry_delay_s, min(RETRY_MAX_S, 2 * self._retry_delay_s)
        log.error(event, scope=self.scope, error=repr(exc), retry_in_s=delay)
        self._retry = self._loop.call_later(delay, action)

    def _stop_waiting(self) -> None:
        if self._waiter is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._waiter.fileno())
            self._waiter.close()
            self._waiter = None

    def close(self) -> None:
        """Stop waiting (idempotent)."""
        self._stop_waiting()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
