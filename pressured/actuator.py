"""The actuator: the only code that acts on a decision.

For a process victim: open its pidfd at once (pinning its identity), re-check its start time
against the snapshot (a reused PID is refused), optionally SIGTERM and wait a grace period,
then hand SIGKILL + mrelease to the reaper thread, and wait for the pidfd to turn readable
(the victim exited). For a cgroup victim: a pidfd per member, then ``cgroup.kill`` and mrelease
of each member on the reaper thread. Every path ends in one :class:`KillRecord`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import structlog

from pressured.config import KillSettings
from pressured.events import (
    PRESSURE_LEVEL_KEY,
    KillReason,
    KillRecord,
    KillResult,
    PressureEvent,
    VictimKind,
)
from pressured.kernel import pidfd as pidfd_mod
from pressured.kernel import procfs
from pressured.kernel.cgroupfs import Cgroup, CgroupLayout
from pressured.kernel.pidfd import MreleaseResult
from pressured.policies.base import Decision, Victim
from pressured.reaper import Reaper, ReaperBusy
from pressured.snapshot import Snapshot

log = structlog.get_logger("pressured.actuator")
T = TypeVar("T")

PreKillHook = Callable[[Mapping[str, str]], Awaitable[None]]
"""Called with the victim's facts before the signal; bounded by its own time limits."""


async def wait_exited(pidfd: int, timeout_s: float) -> int | None:
    """Wait on the loop for a pidfd to become readable; the monotonic ns when it did, or None.

    A pidfd polls readable once its process has exited, so this is the death notification:
    no polling, one ``add_reader`` for the duration.
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


def identity_matches(pid: int, start_time: int | None, proc_root: str = "/proc") -> bool:
    """Whether ``pid`` is still the process that started at ``start_time``. Call it after
    opening the pidfd: from then on the PID cannot be recycled under us."""
    if start_time is None:
        return True
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as handle:
            return procfs.parse_stat(handle.read()).start_time == start_time
    except (OSError, ValueError):
        return False


def elapsed_ms(start_ns: int | None, end_ns: int | None) -> float | None:
    if start_ns is None or end_ns is None:
        return None
    return round((end_ns - start_ns) / 1e6, 3)


@dataclass(frozen=True, slots=True)
class _Context:
    event: PressureEvent
    decision: Decision
    decided_ns: int
    dry_run: bool


class Actuator:
    def __init__(
        self,
        reaper: Reaper,
        settings: KillSettings,
        *,
        layout: CgroupLayout | None,
        proc_root: str = "/proc",
        pre_kill: PreKillHook | None = None,
    ) -> None:
        self.pre_kill = pre_kill
        self.reaper = reaper
        self.settings = settings
        self.layout = layout
        self.proc_root = proc_root

    async def execute(
        self,
        victim: Victim,
        snapshot: Snapshot,
        decision: Decision,
        *,
        decided_ns: int,
        dry_run: bool,
    ) -> KillRecord:
        ctx = _Context(snapshot.event, decision, decided_ns, dry_run)
        if victim.kind is VictimKind.CGROUP:
            return await self._kill_group(victim, snapshot, ctx)
        return await self._kill_process(victim, snapshot, ctx)

    # -- records --------------------------------------------------------------------------
    def _record(
        self,
        ctx: _Context,
        victim: Victim,
        result: KillResult,
        *,
        pid: int | None,
        comm: str,
        rss: int,
        sig: str,
        members: int = 1,
        mrelease: MreleaseResult | None = None,
        signal_ns: int | None = None,
        reaped_ns: int | None = None,
        exit_ns: int | None = None,
        boosted: bool = False,
    ) -> KillRecord:
        event = ctx.event
        pressure = event.pressure
        target = (
            f"cgroup {victim.cgroup}" if victim.kind is VictimKind.CGROUP else f"pid {pid} ({comm})"
        )
        return KillRecord(
            kind=victim.kind,
            target=target,
            pid=pid,
            comm=comm,
            cgroup=victim.cgroup,
            policy=ctx.decision.policy,
            reason=victim.reason,
            scope=event.scope,
            level=event.level,
            result=result,
            signal=sig,
            rss_before_bytes=rss,
            members=members,
            mrelease=mrelease,
            event_to_decision_ms=elapsed_ms(event.monotonic_ns, ctx.decided_ns),
            decision_to_signal_ms=elapsed_ms(ctx.decided_ns, signal_ns),
            signal_to_reaped_ms=elapsed_ms(signal_ns, reaped_ns),
            signal_to_exit_ms=elapsed_ms(signal_ns, exit_ns),
            trigger=str(event.trigger) if event.trigger else None,
            pressure_some_avg10=pressure.some.avg10 if pressure else None,
            pressure_full_avg10=pressure.full.avg10 if pressure and pressure.full else None,
            figures=dict(victim.figures),
            ranking=tuple(ctx.decision.ranking),
            dry_run=ctx.dry_run,
            victim_boosted=boosted,
            kill_reason=KillReason.of(event),
        )

    async def _run_pre_kill(self, victim: Victim, ctx: _Context, comm: str, rss: int) -> None:
        if self.pre_kill is None:
            return
        facts = {
            "kind": str(victim.kind),
            "pid": str(victim.pid or ""),
            "comm": comm,
            "cgroup": victim.cgroup or "",
            "policy": ctx.decision.policy,
            "reason": victim.reason,
            "kill_reason": str(KillReason.of(ctx.event)),
            "scope": ctx.event.scope,
            PRESSURE_LEVEL_KEY: ctx.event.level,
            "rss_before_bytes": str(rss),
            "dry_run": "1" if ctx.dry_run else "0",
        }
        try:
            await self.pre_kill(facts)
        except Exception as exc:  # hooks report their own failures; never block a kill
            log.warning("hook.pre_kill_error", error=repr(exc))

    async def _reap(self, job: Callable[[], Awaitable[T]]) -> T | None:
        """Run a reaper job; if the thread is stuck, dead or jammed, replace it and retry once.
        None when the retry failed too (the caller records a failed kill).

        The retry re-sends SIGKILL (harmless to a dying process) and calls mrelease again.
        """
        timeout_s = self.settings.reaper_timeout_ms / 1000
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(timeout_s):
                    return await job()
            except (TimeoutError, ReaperBusy, RuntimeError) as exc:
                log.error(
                    "reaper.unresponsive",
                    error=repr(exc),
                    timeout_s=timeout_s,
                    attempt=attempt,
                    detail="replacing the reaper thread",
                )
                # Rare emergency path: starting a thread takes about a millisecond, so it is
                # done right here rather than through yet another thread.
                self.reaper.restart()
        return None

    # -- processes ------------------------------------------------------------------------
    def _identity_ok(self, pid: int, start_time: int | None) -> bool:
        return identity_matches(pid, start_time, self.proc_root)

    async def _kill_process(self, victim: Victim, snapshot: Snapshot, ctx: _Context) -> KillRecord:
        assert victim.pid is not None  # noqa: S101 - the guard rejects pid-less process victims
        record = snapshot.process(victim.pid)
        comm = record.comm if record else "?"
        rss = record.memory_bytes if record else 0
        try:
            fd = pidfd_mod.open_pidfd(victim.pid)
        except ProcessLookupError:
            return self._record(
                ctx, victim, KillResult.VANISHED, pid=victim.pid, comm=comm, rss=rss, sig="none"
            )
        try:
            # The pidfd is open: from here the PID cannot be recycled under us, so one check
            # of the start time proves we hold the process the policy chose.
            if not self._identity_ok(victim.pid, victim.start_time):
                exited = pidfd_mod.has_exited(fd)
                result = KillResult.VANISHED if exited else KillResult.IDENTITY_CHANGED
                return self._record(
                    ctx, victim, result, pid=victim.pid, comm=comm, rss=rss, sig="none"
                )
            await self._run_pre_kill(victim, ctx, comm, rss)
            if ctx.dry_run:
                return self._record(
                    ctx, victim, KillResult.DRY_RUN, pid=victim.pid, comm=comm, rss=rss, sig="none"
                )
            return await self._signal_process(victim, ctx, fd, comm, rss)
        finally:
            pidfd_mod.close_quietly(fd)

    async def _signal_process(
        self, victim: Victim, ctx: _Context, fd: int, comm: str, rss: int
    ) -> KillRecord:
        pid = victim.pid
        assert pid is not None  # noqa: S101 - checked by the caller
        confirm_s = self.settings.confirm_timeout_ms / 1000
        if pidfd_mod.has_exited(fd):
            # Exited (perhaps a zombie not yet collected) between choice and now: nothing to
            # free, and nobody else is signalled in its place.
            return self._record(
                ctx, victim, KillResult.VANISHED, pid=pid, comm=comm, rss=rss, sig="none"
            )
        if self.settings.sigterm_first:
            try:
                pidfd_mod.send_signal(fd, signal.SIGTERM)
            except ProcessLookupError:
                return self._record(
                    ctx, victim, KillResult.VANISHED, pid=pid, comm=comm, rss=rss, sig="none"
                )
            term_ns = time.monotonic_ns()
            exit_ns = await wait_exited(fd, self.settings.grace_ms / 1000)
            if exit_ns is not None:
                return self._record(
                    ctx,
                    victim,
                    KillResult.KILLED,
                    pid=pid,
                    comm=comm,
                    rss=rss,
                    sig="SIGTERM",
                    signal_ns=term_ns,
                    exit_ns=exit_ns,
                )
            log.info(
                "victim.escalate",
                pid=pid,
                comm=comm,
                grace_ms=self.settings.grace_ms,
                detail="still alive after SIGTERM",
            )
        outcome = await self._reap(lambda: self.reaper.kill(pid, fd))
        if outcome is None:
            return self._record(
                ctx, victim, KillResult.FAILED, pid=pid, comm=comm, rss=rss, sig="none"
            )
        if not outcome.signalled:
            result = (
                KillResult.VANISHED
                if outcome.signal_error and "exited" in outcome.signal_error
                else KillResult.FAILED
            )
            return self._record(ctx, victim, result, pid=pid, comm=comm, rss=rss, sig="none")
        exit_ns = await wait_exited(fd, confirm_s)
        result = KillResult.KILLED if exit_ns is not None else KillResult.NOT_CONFIRMED
        return self._record(
            ctx,
            victim,
            result,
            pid=pid,
            comm=comm,
            rss=rss,
            sig="SIGKILL",
            mrelease=outcome.mrelease,
            signal_ns=outcome.signal_ns,
            reaped_ns=outcome.reaped_ns,
            exit_ns=exit_ns,
            boosted=outcome.boosted,
        )

    # -- cgroups --------------------------------------------------------------------------
    async def _kill_group(self, victim: Victim, snapshot: Snapshot, ctx: _Context) -> KillRecord:
        assert victim.cgroup is not None  # noqa: S101 - the guard rejects path-less groups
        if self.layout is None:
            raise RuntimeError("cgroup victim without a cgroup layout")
        group = Cgroup(self.layout, victim.cgroup)
        record = snapshot.cgroup(victim.cgroup)
        rss = record.usage_bytes if record else 0
        try:
            pids = group.all_members()
        except FileNotFoundError:
            return self._record(
                ctx, victim, KillResult.VANISHED, pid=None, comm="", rss=rss, sig="none", members=0
            )
        fds: list[tuple[int, int]] = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                fds.append((pid, pidfd_mod.open_pidfd(pid)))
        try:
            if not fds:
                return self._record(
                    ctx,
                    victim,
                    KillResult.VANISHED,
                    pid=None,
                    comm="",
                    rss=rss,
                    sig="none",
                    members=0,
                )
            await self._run_pre_kill(victim, ctx, "", rss)
            if ctx.dry_run:
                return self._record(
                    ctx,
                    victim,
                    KillResult.DRY_RUN,
                    pid=None,
                    comm="",
                    rss=rss,
                    sig="none",
                    members=len(fds),
                )
            outcome = await self._reap(lambda: self.reaper.kill_group(group, fds))
            if outcome is None or not outcome.killed:
                log.error(
                    "victim.kill_failed",
                    cgroup=victim.cgroup,
                    error=outcome.kill_error if outcome else "reaper unresponsive",
                )
                return self._record(
                    ctx,
                    victim,
                    KillResult.FAILED,
                    pid=None,
                    comm="",
                    rss=rss,
                    sig="none",
                    members=len(fds),
                )
            confirm_s = self.settings.confirm_timeout_ms / 1000
            exits = await asyncio.gather(*(wait_exited(fd, confirm_s) for _, fd in fds))
            all_exited = all(ns is not None for ns in exits)
            last_exit = max((ns for ns in exits if ns is not None), default=None)
            reaped = [m.reaped_ns for m in outcome.members if m.reaped_ns is not None]
            first = next((m.mrelease for m in outcome.members if m.mrelease), None)
            return self._record(
                ctx,
                victim,
                KillResult.KILLED if all_exited else KillResult.NOT_CONFIRMED,
                pid=None,
                comm="",
                rss=rss,
                sig="cgroup.kill",
                members=len(fds),
                mrelease=first,
                signal_ns=outcome.signal_ns,
                reaped_ns=max(reaped) if reaped else None,
                exit_ns=last_exit,
            )
        finally:
            for _, fd in fds:
                pidfd_mod.close_quietly(fd)
