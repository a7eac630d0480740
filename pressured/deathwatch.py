"""Victims that were sent SIGKILL and have not exited yet.

A victim with SIGKILL pending whose memory was reaped (or whose reaping failed) no longer
needs the scope's attention: what it held is freed, and waiting for its exit would only keep
the scope from acting on pressure that is still there. A frozen task, or one stuck in the
kernel, may not exit for a long time. So the actuator hands such a victim here and returns:
this waits for the exit in the background (one pidfd per victim, on the loop), logs when it
comes or when the confirmation limit passes, and meanwhile remembers the victim's identity so
that no policy picks it again while it lives (the guard refuses it, and the snapshot leaves it
out of the candidates). Shared by every guard of the daemon and kept across reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
import time
from collections.abc import Awaitable, Callable

import structlog

from pressured.events import KillRecord, KillResult
from pressured.kernel import pidfd as pidfd_mod

log = structlog.get_logger("pressured.deathwatch")

Identity = tuple[int, int | None]
"""(pid, start time); a start time of None matches any process with that pid."""

Settled = Callable[[KillRecord], None]
"""Told how a dying victim's kill ended: KILLED with its exit time, or NOT_CONFIRMED."""
GroupWait = Callable[[float | None], Awaitable[int | None]]
"""Waits (up to the timeout given, None: for ever) until a group is empty; monotonic ns."""


async def wait_exited(pidfd: int, timeout_s: float | None) -> int | None:
    """Wait on the loop for a pidfd to become readable; the monotonic ns when it did, or None.

    A pidfd polls readable once its process has exited, so this is the death notification:
    no polling, one ``add_reader`` for the duration. ``timeout_s`` None waits for ever.
    """
    if pidfd_mod.has_exited(pidfd):
        return time.monotonic_ns()
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int] = loop.create_future()

    def _readable() -> None:
        if not exited.done():
            exited.set_result(time.monotonic_ns())

    loop.add_reader(pidfd, _readable)
    try:
        async with asyncio.timeout(timeout_s):
            return await exited
    except TimeoutError:
        return None
    finally:
        loop.remove_reader(pidfd)


def _ms(start_ns: int, end_ns: int) -> float:
    return round((end_ns - start_ns) / 1e6, 3)


class DeathWatch:
    """Dying victims by identity, each watched until it exits."""

    def __init__(self, on_settled: Settled | None = None) -> None:
        self.on_settled = on_settled
        # The watchdog thread asks too (through its guard), hence the lock.
        self._lock = threading.Lock()
        self._dying: dict[Identity, str] = {}
        self._dying_groups: set[str] = set()
        # Kills still within their confirmation time, by scope: until the victim is gone (or
        # given up on), the scope's own refault figures may still be the victim's doing.
        self._confirming: dict[int, str] = {}
        self._keys = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self.undying_total = 0

    def is_dying(self, pid: int, start_time: int | None) -> bool:
        """Whether this process was already sent SIGKILL and has not exited."""
        with self._lock:
            return (pid, start_time) in self._dying or (pid, None) in self._dying

    def is_dying_group(self, path: str) -> bool:
        """Whether this cgroup was already killed and still holds processes."""
        with self._lock:
            return path in self._dying_groups

    def confirming(self, scope: str) -> bool:
        """Whether a kill in ``scope`` still waits for its victim's exit (within the
        confirmation time; an undying victim no longer counts)."""
        with self._lock:
            return scope in self._confirming.values()

    def _start_confirming(self, scope: str) -> int:
        key = next(self._keys)
        with self._lock:
            self._confirming[key] = scope
        return key

    def _stop_confirming(self, key: int) -> None:
        with self._lock:
            self._confirming.pop(key, None)

    @property
    def dying(self) -> dict[Identity, str]:
        with self._lock:
            return dict(self._dying)

    def watch(
        self,
        pidfd: int,
        identity: Identity,
        record: KillRecord,
        *,
        signal_ns: int | None,
        timeout_s: float,
    ) -> None:
        """Take ownership of ``pidfd`` (closed here, on every path) and follow the victim."""
        with self._lock:
            self._dying[identity] = record.target
        key = self._start_confirming(record.scope)
        try:
            task = asyncio.get_running_loop().create_task(
                self._follow(
                    pidfd,
                    identity,
                    record,
                    key=key,
                    signal_ns=signal_ns,
                    timeout_s=timeout_s,
                ),
                name=f"deathwatch:{identity[0]}",
            )
        except BaseException:
            self._forget(identity)
            self._stop_confirming(key)
            pidfd_mod.close_quietly(pidfd)
            raise
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def watch_group(
        self,
        path: str,
        wait_empty: GroupWait,
        record: KillRecord,
        *,
        signal_ns: int | None,
        timeout_s: float,
    ) -> None:
        """Follow a killed cgroup until it is empty (no fd per member: ``wait_empty`` watches
        its ``cgroup.events``)."""
        with self._lock:
            self._dying_groups.add(path)
        key = self._start_confirming(record.scope)

        async def follow() -> None:
            try:
                empty_ns = await wait_empty(timeout_s)
                self._stop_confirming(key)
                self._settled(record, signal_ns, empty_ns)
                if empty_ns is None:
                    self.undying_total += 1
                    log.error(
                        "victim.undying",
                        target=record.target,
                        waited_s=timeout_s,
                        detail="cgroup.kill sent but the group still holds processes; it is "
                        "never chosen again while it does",
                    )
                    empty_ns = await wait_empty(None)
                log.info(
                    "victim.exit_confirmed",
                    target=record.target,
                    signal_to_exit_ms=_ms(signal_ns, empty_ns) if signal_ns and empty_ns else None,
                )
            finally:
                self._stop_confirming(key)
                with self._lock:
                    self._dying_groups.discard(path)

        try:
            task = asyncio.get_running_loop().create_task(follow(), name=f"deathwatch:{path}")
        except BaseException:
            self._stop_confirming(key)
            with self._lock:
                self._dying_groups.discard(path)
            raise
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _settled(
        self, record: KillRecord, signal_ns: int | None, exit_ns: int | None
    ) -> KillRecord:
        """The kill record as it ended, handed to ``on_settled`` (never raises)."""
        if exit_ns is not None:
            final = dataclasses.replace(
                record,
                result=KillResult.KILLED,
                signal_to_exit_ms=_ms(signal_ns, exit_ns) if signal_ns else None,
            )
        else:
            final = dataclasses.replace(record, result=KillResult.NOT_CONFIRMED)
        if self.on_settled is not None:
            try:
                self.on_settled(final)
            except Exception as exc:  # a reporting callback must not end the watch
                log.warning("deathwatch.settled_failed", error=repr(exc))
        return final

    def _forget(self, identity: Identity) -> None:
        with self._lock:
            self._dying.pop(identity, None)

    async def _follow(
        self,
        pidfd: int,
        identity: Identity,
        record: KillRecord,
        *,
        key: int,
        signal_ns: int | None,
        timeout_s: float,
    ) -> None:
        try:
            exit_ns = await wait_exited(pidfd, timeout_s)
            self._stop_confirming(key)
            final = self._settled(record, signal_ns, exit_ns)
            if exit_ns is not None:
                log.info(
                    "victim.exit_confirmed",
                    target=record.target,
                    pid=identity[0],
                    signal_to_exit_ms=final.signal_to_exit_ms,
                )
            else:
                self.undying_total += 1
                log.error(
                    "victim.undying",
                    target=record.target,
                    pid=identity[0],
                    waited_s=timeout_s,
                    detail="SIGKILL pending but no exit (frozen, or stuck in the kernel); "
                    "it is never chosen again while it lives",
                )
            if exit_ns is None:
                exit_ns = await wait_exited(pidfd, None)
                log.warning(
                    "victim.undying_exited",
                    target=record.target,
                    pid=identity[0],
                    signal_to_exit_ms=_ms(signal_ns, exit_ns) if signal_ns and exit_ns else None,
                )
        finally:
            self._stop_confirming(key)
            self._forget(identity)
            pidfd_mod.close_quietly(pidfd)

    async def wait_all(self) -> None:
        """Wait until every victim followed now has exited (tests, orderly shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop watching (shutdown): every pidfd is closed."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
