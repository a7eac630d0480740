"""The watchdog: a thread that acts when the event loop cannot.

A blocking plugin or a loop stuck in reclaim must not leave the machine to freeze. The
watchdog thread holds its own PSI trigger per scope (on the scope's most severe level) and
sleeps in ``poll()`` until one fires: no timer, so no idle wake-ups. When one fires it asks the
loop for a sign of life (``call_soon_threadsafe``); if none comes within ``stall_limit_ms`` it
logs ``watchdog.loop_stuck`` and performs the default policy's kill itself, from its own
thread: scan, rank by the kernel's badness, guard, pidfd, SIGKILL + mrelease.

Its kills obey the same limits as the loop's: its guard shares the daemon's
:class:`~pressured.pacing.Pacing` (in flight, cooldown, kills per minute) and death watch, and
each kill produces the same :class:`~pressured.events.KillRecord`, logged at once from this
thread and queued for the controller's publish path (journal, metrics, post-kill hooks),
which runs when the loop answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import select
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from pressured.actuator import elapsed_ms, identity_matches
from pressured.config import GuardSettings, ScopeSettings
from pressured.deathwatch import DeathWatch
from pressured.events import (
    SYSTEM_SCOPE,
    EventSource,
    KillReason,
    KillRecord,
    KillResult,
    PressureEvent,
    VictimKind,
)
from pressured.guard import OOM_SCORE_ADJ_NEVER, Guard
from pressured.kernel import inotify, psi
from pressured.kernel import pidfd as pidfd_mod
from pressured.kernel.cgroupfs import Cgroup, CgroupLayout
from pressured.kernel.procfs import ProcessRecord
from pressured.pacing import Pacing
from pressured.policies.base import Victim
from pressured.reaper import ReapOutcome, kill_and_release
from pressured.snapshot import take_snapshot

log = structlog.get_logger("pressured.watchdog")

WATCHDOG_POLICY = "watchdog"
EXIT_WAIT_S = 5.0
Publish = Callable[[KillRecord], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class WatchedScope:
    name: str
    cgroup: str | None
    memcg_v1: str | None
    pressure_path: str
    spec: psi.TriggerSpec
    level: str


def watched_scope(
    scope: ScopeSettings, layout: CgroupLayout | None, proc_root: str
) -> WatchedScope | None:
    """The scope's most severe level (a 'full' one if any, else the last), or None."""
    if not scope.levels:
        return None
    level = next((lv for lv in reversed(scope.levels) if lv.kind == "full"), scope.levels[-1])
    if scope.cgroup is not None and layout is not None:
        path = str(Cgroup(layout, scope.cgroup).pressure_path("memory"))
    else:
        path = str(psi.system_pressure_path("memory", proc_root))
    return WatchedScope(
        scope.cgroup or SYSTEM_SCOPE,
        scope.cgroup,
        scope.memcg_v1,
        path,
        level.trigger(),
        level.name,
    )


class Watchdog:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        scopes: list[WatchedScope],
        *,
        stall_limit_s: float,
        guard_settings: GuardSettings,
        self_cgroup: str | None,
        layout: CgroupLayout | None,
        proc_root: str,
        privileged: bool,
        dry_run: bool,
        pacing: Pacing | None = None,
        deaths: DeathWatch | None = None,
        publish: Publish | None = None,
    ) -> None:
        self.loop = loop
        self.scopes = scopes
        self.stall_limit_s = stall_limit_s
        self.guard = Guard(
            guard_settings, self_cgroup=self_cgroup, pacing=pacing, deaths=deaths, layout=layout
        )
        self.publish = publish
        self._records: queue.SimpleQueue[KillRecord] = queue.SimpleQueue()
        self._publishing: set[asyncio.Task[None]] = set()
        self.layout = layout
        self.proc_root = proc_root
        self.privileged = privileged
        self.dry_run = dry_run
        self._fds: dict[int, WatchedScope] = {}
        self._windows_s: dict[int, float] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread: threading.Thread | None = None
        self._waiters: dict[int, tuple[inotify.PathWaiter, WatchedScope]] = {}
        self.stuck_detected = 0
        self.kills = 0
        self.checks = 0

    def start(self) -> None:
        for scope in self.scopes:
            spec, _ = psi.legalize(scope.spec, privileged=self.privileged)
            fd = psi.open_trigger(scope.pressure_path, spec)
            self._fds[fd] = scope
            self._windows_s[fd] = spec.window_us / 1e6
        self._thread = threading.Thread(target=self._run, name="pressured-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        for fd in self._fds:
            pidfd_mod.close_quietly(fd)
        self._fds.clear()
        for waiter, _scope in self._waiters.values():
            waiter.close()
        self._waiters.clear()
        pidfd_mod.close_quietly(self._wake_r)
        pidfd_mod.close_quietly(self._wake_w)

    def _presence(self, poller: select.poll, ready: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Handle groups gone (POLLERR) and back (a waiter readable); the rest of ``ready``."""
        rest = []
        for fd, mask in ready:
            try:
                if fd in self._waiters:
                    self._group_changed(poller, fd)
                elif fd in self._fds and mask & (select.POLLERR | select.POLLNVAL):
                    self._scope_gone(poller, fd)
                else:
                    rest.append((fd, mask))
            except Exception as exc:  # this thread must not die: say so and carry on
                log.error("watchdog.presence_failed", fd=fd, error=repr(exc))
                if fd in self._waiters:  # a waiter that fails would stay readable: drop it
                    poller.unregister(fd)
                    self._waiters.pop(fd)[0].close()
        return rest

    # A removed group's trigger reports POLLPRI|POLLERR on every poll, forever: close it at
    # once (else this thread spins) and wait, by inotify, for the group to be made again.
    def _scope_gone(self, poller: select.poll, fd: int) -> None:
        poller.unregister(fd)
        scope = self._fds.pop(fd)
        self._windows_s.pop(fd, None)
        pidfd_mod.close_quietly(fd)
        log.warning("watchdog.scope_gone", scope=scope.name, path=scope.pressure_path)
        self._wait_for_group(poller, scope)

    def _wait_for_group(self, poller: select.poll, scope: WatchedScope) -> None:
        try:
            waiter = inotify.PathWaiter(os.path.dirname(scope.pressure_path))
        except OSError as exc:
            log.error("watchdog.wait_failed", scope=scope.name, error=repr(exc))
            return
        self._waiters[waiter.fileno()] = (waiter, scope)
        poller.register(waiter.fileno(), select.POLLIN)
        self._group_changed(poller, waiter.fileno())  # it may be back already

    def _group_changed(self, poller: select.poll, waiter_fd: int) -> None:
        waiter, scope = self._waiters[waiter_fd]
        if not waiter.check():
            return
        poller.unregister(waiter_fd)
        del self._waiters[waiter_fd]
        waiter.close()
        try:
            spec, _ = psi.legalize(scope.spec, privileged=self.privileged)
            fd = psi.open_trigger(scope.pressure_path, spec)
        except Exception as exc:  # a watchdog that dies protects nothing: log and carry on
            if not os.path.isdir(os.path.dirname(scope.pressure_path)):
                self._wait_for_group(poller, scope)  # gone again before we could arm
            else:
                log.error("watchdog.rearm_failed", scope=scope.name, error=repr(exc))
            return
        self._fds[fd] = scope
        self._windows_s[fd] = spec.window_us / 1e6  # the stale-event rule needs its window
        poller.register(fd, select.POLLPRI)
        log.info("watchdog.rearmed", scope=scope.name)

    def loop_answers(self, timeout_s: float) -> bool:
        answered = threading.Event()
        try:
            self.loop.call_soon_threadsafe(answered.set)
        except RuntimeError:
            return True  # the loop is closed: we are shutting down, nothing is stuck
        return answered.wait(timeout_s)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        for fd in self._fds:
            poller.register(fd, select.POLLPRI)
        while True:
            ready = poller.poll()
            if any(fd == self._wake_r for fd, _ in ready):
                return
            ready = self._presence(poller, ready)
            for fd, mask in ready:
                if mask & select.POLLPRI and fd in self._fds:
                    self._on_pressure(self._fds[fd], self._windows_s[fd])

    def _stale(self, window_s: float) -> bool:
        """Whether a trigger event may only count stall that the last kill (ours or the
        loop's) already ended: an event can carry stall from up to two windows back, the
        same rule the scopes apply. Acting on it would take an innocent second victim."""
        since = self.guard.pacing_state.seconds_since_last_kill()
        return since is not None and since < 2 * window_s

    def _on_pressure(self, scope: WatchedScope, window_s: float) -> None:
        self.checks += 1
        if self._stale(window_s):
            log.info("watchdog.stale_event", scope=scope.name, window_s=window_s)
            return
        started = time.monotonic()
        if self.loop_answers(self.stall_limit_s):
            return
        self.stuck_detected += 1
        log.critical(
            "watchdog.loop_stuck",
            scope=scope.name,
            level=scope.level,
            waited_s=round(time.monotonic() - started, 3),
            detail="the event loop does not answer under critical pressure; "
            "the watchdog kills by the default policy itself",
        )
        try:
            self.emergency_kill(scope)
        except Exception as exc:  # a watchdog that dies protects nothing: log and carry on
            log.error("watchdog.kill_failed", scope=scope.name, error=repr(exc))

    # -- records ----------------------------------------------------------------------------
    def _deliver(self, record: KillRecord) -> None:
        """Queue a record for the loop (thread-safe); it is published once the loop runs."""
        if self.publish is None:
            return
        self._records.put(record)
        with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """On the loop: hand every queued record to the controller's publish path."""
        assert self.publish is not None  # noqa: S101 - only scheduled with a publisher
        while True:
            try:
                record = self._records.get_nowait()
            except queue.Empty:
                return
            task = self.loop.create_task(self.publish(record), name="watchdog:publish")
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

    def pending_records(self) -> int:
        return self._records.qsize()

    @staticmethod
    def _record(
        scope: WatchedScope,
        victim: ProcessRecord,
        result: KillResult,
        *,
        outcome: ReapOutcome | None = None,
        exit_ns: int | None = None,
        event: PressureEvent,
    ) -> KillRecord:
        return KillRecord(
            kind=VictimKind.PROCESS,
            target=f"pid {victim.pid} ({victim.comm})",
            pid=victim.pid,
            comm=victim.comm,
            cgroup=victim.cgroup,
            policy=WATCHDOG_POLICY,
            reason="watchdog: loop stuck under critical pressure",
            scope=scope.name,
            level=scope.level,
            result=result,
            signal="SIGKILL" if outcome is not None and outcome.signalled else "none",
            rss_before_bytes=victim.memory_bytes,
            mrelease=outcome.mrelease if outcome is not None else None,
            signal_to_reaped_ms=outcome.signal_to_reaped_ms if outcome is not None else None,
            signal_to_exit_ms=elapsed_ms(outcome.signal_ns, exit_ns) if outcome else None,
            dry_run=result is KillResult.DRY_RUN,
            victim_boosted=outcome.boosted if outcome is not None else False,
            event_to_decision_ms=elapsed_ms(event.monotonic_ns, time.monotonic_ns()),
            kill_reason=KillReason.of(event),
        )

    # -- the kill -----------------------------------------------------------------------------
    def emergency_kill(self, scope: WatchedScope) -> bool:
        """The default policy (kernel badness), guarded and paced like the loop's kills,
        executed on this thread."""
        refused = self.guard.pacing()
        if refused is not None:
            log.warning("watchdog.deferred", scope=scope.name, reason=refused)
            return False
        event = PressureEvent(scope=scope.name, level=scope.level, source=EventSource.WATCHDOG)
        snapshot = take_snapshot(
            event,
            layout=self.layout,
            proc_root=self.proc_root,
            cgroup_path=scope.cgroup,
            memcg_v1_path=scope.memcg_v1,
            protection=self.guard.process_protection,
        )
        ranked = sorted(
            (p for p in snapshot.candidates if p.oom_score_adj > OOM_SCORE_ADJ_NEVER),
            key=lambda p: (p.oom_score, p.memory_bytes),
            reverse=True,
        )
        for record in ranked:
            victim = Victim.process(record, "watchdog: loop stuck under critical pressure")
            if self.guard.check(victim, snapshot) is not None:
                continue
            # Checked and counted in one step: the loop may come back and race us.
            refused = self.guard.try_start()
            if refused is not None:
                log.warning("watchdog.deferred", scope=scope.name, reason=refused)
                return False
            try:
                return self._kill_one(scope, record, event)
            finally:
                self.guard.kill_finished()
        log.error("watchdog.no_victim", scope=scope.name)
        return False

    def _kill_one(self, scope: WatchedScope, record: ProcessRecord, event: PressureEvent) -> bool:
        if self.dry_run:
            log.critical(
                "watchdog.would_kill",
                pid=record.pid,
                comm=record.comm,
                rss_before_bytes=record.memory_bytes,
            )
            self._deliver(self._record(scope, record, KillResult.DRY_RUN, event=event))
            return False
        try:
            fd = pidfd_mod.open_pidfd(record.pid)
        except ProcessLookupError:
            self._deliver(self._record(scope, record, KillResult.VANISHED, event=event))
            return False
        try:
            if not identity_matches(record.pid, record.start_time, self.proc_root):
                self._deliver(self._record(scope, record, KillResult.IDENTITY_CHANGED, event=event))
                return False
            outcome = kill_and_release(record.pid, fd)
            exited = outcome.signalled and pidfd_mod.wait_exited(fd, EXIT_WAIT_S)
            exit_ns = time.monotonic_ns() if exited else None
        finally:
            pidfd_mod.close_quietly(fd)
        if not outcome.signalled:
            self._deliver(self._record(scope, record, KillResult.VANISHED, event=event))
            return False
        self.kills += 1
        result = KillResult.KILLED if exited else KillResult.NOT_CONFIRMED
        log.critical(
            "watchdog.killed",
            scope=scope.name,
            pid=record.pid,
            comm=record.comm,
            rss_before_bytes=record.memory_bytes,
            exited=exited,
            mrelease=str(outcome.mrelease.status) if outcome.mrelease else None,
            signal_to_reaped_ms=outcome.signal_to_reaped_ms,
        )
        self._deliver(
            self._record(scope, record, result, outcome=outcome, exit_ns=exit_ns, event=event)
        )
        return True
