"""The actuator: the only code that acts on a decision.

For a process victim: open its pidfd at once (pinning its identity), re-check its start time
against the snapshot (a reused PID is refused), optionally SIGTERM and wait a grace period,
then hand SIGKILL + mrelease to the reaper thread (with the victim's family, if the policy
named one: each member's pidfd opened and its identity checked, in bounded batches), and wait
briefly for the pidfd to turn readable. A victim that has not exited by then has had its
memory reaped (or reaping failed) and SIGKILL is pending: the record says ``dying``, the scope
is free again, and :class:`~pressured.deathwatch.DeathWatch` confirms the exit in the
background and keeps the victim from being chosen again meanwhile.

For a cgroup victim: pidfds for a bounded number of its largest members (so their memory can
be reaped), then ``cgroup.kill`` and mrelease of those on the reaper thread, then the group's
``cgroup.events`` is watched for ``populated 0``: no fd per member, whatever the group's size.
Every fd is closed on every path. Every path ends in one :class:`KillRecord`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import structlog

from pressured.config import KillSettings
from pressured.deathwatch import DeathWatch, wait_exited
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
from pressured.kernel.procfs import start_ticks_at
from pressured.policies.base import Decision, Victim
from pressured.reaper import Reaper, ReaperBusy, ReapOutcome
from pressured.snapshot import Snapshot
from pressured.stragglers import Protection, find_stragglers

__all__ = ["Actuator", "PreKillHook", "elapsed_ms", "identity_matches", "wait_exited"]

log = structlog.get_logger("pressured.actuator")
T = TypeVar("T")

PreKillHook = Callable[[Mapping[str, str]], Awaitable[None]]
"""Called with the victim's facts before the signal; bounded by its own time limits."""

GROUP_MRELEASE_MEMBERS = 16
"""A cgroup victim: pidfds are opened for this many of its largest members only (to mrelease
them); the rest die by ``cgroup.kill`` alone. One fd per member would hit EMFILE on a large
group, and the few largest hold most of the memory worth reaping at once."""

FAMILY_BATCH = 64
"""A process victim's family is signalled in batches of this many pidfds at most."""
STRAGGLER_ROUNDS = 2
"""Sweeps for children forked after the snapshot (each kills what it finds)."""

EXIT_SETTLE_S = 0.5
"""After SIGKILL and mrelease, how long the scope waits for the exit before it moves on and
the exit is confirmed in the background. A reaped victim has given its memory back already;
a normal one exits within milliseconds, a frozen one may never."""

LISTED_FAMILY = 64
"""At most this many family PIDs are listed in the kill record (``figures["family"]``)."""


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
        deaths: DeathWatch | None = None,
        io: Executor | None = None,
        protection: Protection | None = None,
    ) -> None:
        self.pre_kill = pre_kill
        self.protection = protection
        """The guard's process protection, for stragglers (the family itself was checked)."""
        self.io = io
        """Where the straggler sweep after a family kill reads /proc (None: the loop's default
        executor)."""
        self.reaper = reaper
        self.settings = settings
        self.layout = layout
        self.proc_root = proc_root
        self.deaths = deaths if deaths is not None else DeathWatch()

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
        extra: Mapping[str, float | int | str] | None = None,
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
            figures={**victim.figures, **(extra or {})},
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
                family = self._family_order(victim, snapshot)
                return self._record(
                    ctx,
                    victim,
                    KillResult.DRY_RUN,
                    pid=victim.pid,
                    comm=comm,
                    rss=rss,
                    sig="none",
                    members=1 + len(family),
                    extra=_family_figures([pid for pid, _ in family]) if family else None,
                )
            return await self._signal_process(victim, snapshot, ctx, fd, comm=comm, rss=rss)
        finally:
            pidfd_mod.close_quietly(fd)

    async def _signal_process(
        self, victim: Victim, snapshot: Snapshot, ctx: _Context, fd: int, *, comm: str, rss: int
    ) -> KillRecord:
        pid = victim.pid
        assert pid is not None  # noqa: S101 - checked by the caller
        if pidfd_mod.has_exited(fd):
            # Exited (perhaps a zombie not yet collected) between choice and now: nothing to
            # free, and nobody else is signalled in its place.
            return self._record(
                ctx, victim, KillResult.VANISHED, pid=pid, comm=comm, rss=rss, sig="none"
            )
        if self.settings.sigterm_first and not victim.family:
            # A family dies by SIGKILL at once: a SIGTERM to the parent alone could leave
            # its children running, and the point of a family kill is one kill per cause.
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
        extra: dict[str, float | int | str] = {}
        members = 1
        if victim.family:
            family = await self._kill_with_family(victim, snapshot, fd)
            outcome = family.main
            members += len(family.signalled)
            extra = {
                **_family_figures(family.signalled),
                "family_unconfirmed": family.unconfirmed,
                "family_skipped": family.skipped,
            }
        else:
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
        confirm_s = self.settings.confirm_timeout_ms / 1000
        settle_s = min(confirm_s, EXIT_SETTLE_S)
        exit_ns = await wait_exited(fd, settle_s)
        record = self._record(
            ctx,
            victim,
            KillResult.KILLED if exit_ns is not None else KillResult.DYING,
            pid=pid,
            comm=comm,
            rss=rss,
            sig="SIGKILL",
            members=members,
            mrelease=outcome.mrelease,
            signal_ns=outcome.signal_ns,
            reaped_ns=outcome.reaped_ns,
            exit_ns=exit_ns,
            boosted=outcome.boosted,
            extra=extra,
        )
        if exit_ns is None:
            self._follow_death(fd, victim, record, outcome.signal_ns, confirm_s - settle_s)
        return record

    def _follow_death(
        self, fd: int, victim: Victim, record: KillRecord, signal_ns: int, timeout_s: float
    ) -> None:
        """Hand a dying victim to the death watch (with its own dup of the pidfd)."""
        assert victim.pid is not None  # noqa: S101 - a process victim
        start_time = victim.start_time
        if start_time is None:
            with (
                contextlib.suppress(OSError, ValueError),
                open(f"{self.proc_root}/{victim.pid}/stat", "rb") as handle,
            ):
                start_time = procfs.parse_stat(handle.read()).start_time
        try:
            own = os.dup(fd)
        except OSError as exc:
            log.error("victim.unwatched", pid=victim.pid, error=exc.strerror)
            return
        log.warning(
            "victim.exit_pending",
            pid=victim.pid,
            target=record.target,
            mrelease=str(record.mrelease.status) if record.mrelease else None,
            detail="SIGKILL pending and memory reaped, no exit yet: the scope moves on, the "
            "exit is confirmed in the background",
        )
        self.deaths.watch(
            own, (victim.pid, start_time), record, signal_ns=signal_ns, timeout_s=timeout_s
        )

    def _family_order(self, victim: Victim, snapshot: Snapshot) -> list[tuple[int, int | None]]:
        """The family without the victim itself, largest first (by the snapshot's RSS)."""
        members = {pid: start for pid, start in victim.family if pid != victim.pid}

        def size(pid: int) -> int:
            record = snapshot.process(pid)
            return record.memory_bytes if record else 0

        return sorted(members.items(), key=lambda item: size(item[0]), reverse=True)

    async def _kill_with_family(self, victim: Victim, snapshot: Snapshot, fd: int) -> _FamilyKill:
        """SIGKILL + mrelease the victim and its family on the reaper thread, in batches of
        at most FAMILY_BATCH pidfds, each member's identity checked once its pidfd is open."""
        assert victim.pid is not None  # noqa: S101 - a process victim
        done = _FamilyKill()
        first = True
        for batch in _chunks(self._family_order(victim, snapshot), FAMILY_BATCH):
            opened: list[tuple[int, int]] = []
            try:
                for pid, start_time in batch:
                    member_fd = self._open_checked(pid, start_time)
                    if member_fd is None:
                        done.skipped += 1
                        continue
                    opened.append((pid, member_fd))
                # The victim goes with the first batch: one job signals them all at once.
                jobs = [(victim.pid, fd), *opened] if first else opened
                outcomes = await self._reap(partial(self.reaper.kill_all, jobs))
                if outcomes is None:
                    if first:
                        return done
                    done.skipped += len(opened)
                    continue
                for outcome in outcomes:
                    if outcome.pid == victim.pid and first:
                        done.main = outcome
                    elif outcome.signalled:
                        done.signalled.append(outcome.pid)
                    else:
                        done.skipped += 1
                exits = await asyncio.gather(
                    *(wait_exited(member_fd, EXIT_SETTLE_S) for _, member_fd in opened)
                )
                done.unconfirmed += sum(1 for ns in exits if ns is None)
            finally:
                for _, member_fd in opened:
                    pidfd_mod.close_quietly(member_fd)
            first = False
        if first:  # no family member left to open: the victim alone
            done.main = await self._reap(lambda: self.reaper.kill(victim.pid or 0, fd))
        if done.main is not None and done.main.signalled:
            await self._kill_stragglers(victim, snapshot, done)
        return done

    async def _kill_stragglers(self, victim: Victim, snapshot: Snapshot, done: _FamilyKill) -> None:
        """Kill the children the family forked after the snapshot listed it
        (pressured/stragglers.py); a second round catches those forked by the first round's
        parents before their SIGKILL landed."""
        root = snapshot.process(victim.pid or 0)
        if root is None or not root.pgid:
            return
        born_since = start_ticks_at(
            snapshot.scan_started_monotonic_ns or snapshot.taken_monotonic_ns
        )
        known = {victim.pid or 0, *(pid for pid, _ in victim.family)}
        loop = asyncio.get_running_loop()
        for _round in range(STRAGGLER_ROUNDS):
            late = await loop.run_in_executor(
                self.io,
                partial(
                    find_stragglers,
                    root.pgid,
                    root.sid,
                    born_since,
                    known,
                    proc_root=self.proc_root,
                    protection=self.protection,
                ),
            )
            if not late:
                return
            known.update(pid for pid, _ in late)
            signalled = 0
            for batch in _chunks(late, FAMILY_BATCH):
                opened = [
                    (pid, member_fd)
                    for pid, start_time in batch
                    if (member_fd := self._open_checked(pid, start_time)) is not None
                ]
                try:
                    outcomes = await self._reap(partial(self.reaper.kill_all, opened))
                finally:
                    for _, member_fd in opened:
                        pidfd_mod.close_quietly(member_fd)
                for outcome in outcomes or ():
                    if outcome.signalled:
                        done.signalled.append(outcome.pid)
                        signalled += 1
            log.info(
                "victim.stragglers",
                pid=victim.pid,
                pgid=root.pgid,
                found=len(late),
                signalled=signalled,
                detail="born after the snapshot listed the family",
            )

    def _open_checked(self, pid: int, start_time: int | None) -> int | None:
        """A pidfd for ``pid`` if it is still the process that started at ``start_time``."""
        try:
            fd = pidfd_mod.open_pidfd(pid)
        except ProcessLookupError:
            return None
        except OSError as exc:  # EMFILE and the like: this member is skipped, not the kill
            log.warning("victim.member_unopened", pid=pid, error=exc.strerror)
            return None
        if not self._identity_ok(pid, start_time):
            pidfd_mod.close_quietly(fd)
            return None
        return fd

    # -- cgroups --------------------------------------------------------------------------
    def _largest_members(
        self, pids: Sequence[int], snapshot: Snapshot, limit: int
    ) -> list[tuple[int, int | None]]:
        """Up to ``limit`` members to mrelease: the largest the snapshot knows first (with
        their start time, checked after opening), then others in listing order."""
        known = [(pid, record) for pid in pids if (record := snapshot.process(pid)) is not None]
        known.sort(key=lambda item: item[1].memory_bytes, reverse=True)
        chosen: list[tuple[int, int | None]] = [
            (pid, record.start_time) for pid, record in known[:limit]
        ]
        if len(chosen) < limit:
            taken = {pid for pid, _ in chosen}
            chosen += [(pid, None) for pid in pids if pid not in taken][: limit - len(chosen)]
        return chosen

    async def _kill_group(self, victim: Victim, snapshot: Snapshot, ctx: _Context) -> KillRecord:
        assert victim.cgroup is not None  # noqa: S101 - the guard rejects path-less groups
        if self.layout is None:
            raise RuntimeError("cgroup victim without a cgroup layout")
        group = Cgroup(self.layout, victim.cgroup)
        record = snapshot.cgroup(victim.cgroup)
        rss = record.usage_bytes if record else 0

        def result(outcome: KillResult, members: int, **timings: object) -> KillRecord:
            return self._record(
                ctx,
                victim,
                outcome,
                pid=None,
                comm="",
                rss=rss,
                sig="cgroup.kill" if outcome in (KillResult.KILLED, KillResult.DYING) else "none",
                members=members,
                **timings,  # type: ignore[arg-type] # keyword timings of _record
            )

        try:
            pids = group.all_members()
        except FileNotFoundError:
            return result(KillResult.VANISHED, 0)
        if not pids:
            return result(KillResult.VANISHED, 0)
        await self._run_pre_kill(victim, ctx, "", rss)
        if ctx.dry_run:
            return result(KillResult.DRY_RUN, len(pids))
        # A few pidfds, opened BEFORE cgroup.kill: after it the members exit and their
        # memory could no longer be reaped by us.
        fds: list[tuple[int, int]] = []
        try:
            for pid, start_time in self._largest_members(pids, snapshot, GROUP_MRELEASE_MEMBERS):
                fd = self._open_checked(pid, start_time)
                if fd is not None:
                    fds.append((pid, fd))
            outcome = await self._reap(lambda: self.reaper.kill_group(group, fds))
        finally:
            for _, fd in fds:
                pidfd_mod.close_quietly(fd)
        if outcome is None or not outcome.killed:
            log.error(
                "victim.kill_failed",
                cgroup=victim.cgroup,
                error=outcome.kill_error if outcome else "reaper unresponsive",
            )
            return result(KillResult.FAILED, len(pids))
        confirm_s = self.settings.confirm_timeout_ms / 1000
        # Scaled by the group's size: exiting thousands of processes takes the kernel a while
        # even when none is stuck, and the largest members are reaped already.
        settle_s = min(confirm_s, EXIT_SETTLE_S * max(1.0, len(pids) / 100))
        exit_ns = await wait_group_empty(group, settle_s)
        reaped = [m.reaped_ns for m in outcome.members if m.reaped_ns is not None]
        first = next((m.mrelease for m in outcome.members if m.mrelease), None)
        kill_record = result(
            KillResult.KILLED if exit_ns is not None else KillResult.DYING,
            len(pids),
            mrelease=first,
            signal_ns=outcome.signal_ns,
            reaped_ns=max(reaped) if reaped else None,
            exit_ns=exit_ns,
        )
        if exit_ns is None:
            log.warning(
                "victim.exit_pending",
                target=kill_record.target,
                detail="cgroup.kill sent and the largest members reaped, the group is not "
                "empty yet: the scope moves on, emptiness is confirmed in the background",
            )
            self.deaths.watch_group(
                group.path,
                partial(wait_group_empty, group),
                kill_record,
                signal_ns=outcome.signal_ns,
                timeout_s=confirm_s - settle_s,
            )
        return kill_record


@dataclass(slots=True)
class _FamilyKill:
    main: ReapOutcome | None = None
    signalled: list[int] = field(default_factory=list)
    skipped: int = 0
    unconfirmed: int = 0


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _family_figures(pids: Sequence[int]) -> dict[str, float | int | str]:
    listed = ",".join(str(pid) for pid in pids[:LISTED_FAMILY])
    if len(pids) > LISTED_FAMILY:
        listed += f",... ({len(pids) - LISTED_FAMILY} more)"
    return {"family": listed, "family_members": len(pids)}


def _populated(fd: int) -> bool:
    """Read ``cgroup.events`` from the start (which also re-arms its poll notification)."""
    data = os.pread(fd, 4096, 0)
    for line in data.decode("ascii", "replace").splitlines():
        key, _, value = line.partition(" ")
        if key == "populated":
            return value.strip() != "0"
    return False


async def wait_group_empty(group: Cgroup, timeout_s: float) -> int | None:
    """Wait on the loop until the group (with its descendants) holds no process; the
    monotonic ns when it did, or None after ``timeout_s``.

    The kernel notifies a change of ``cgroup.events`` to pollers as EPOLLPRI (the file is
    always readable, like a PSI trigger fd), so it sits in an inner epoll registered for
    EPOLLPRI, whose own readability is what the loop waits on: one fd, whatever the size of
    the group, and no polling.
    """
    try:
        fd = os.open(group.file("cgroup.events"), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return time.monotonic_ns()  # removed: it was empty
    loop = asyncio.get_running_loop()
    inner = select.epoll(1)
    changed = asyncio.Event()
    try:
        inner.register(fd, select.EPOLLPRI)
        loop.add_reader(inner.fileno(), changed.set)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    changed.clear()
                    try:
                        if not _populated(fd):
                            return time.monotonic_ns()
                    except OSError as exc:
                        if exc.errno == errno.ENODEV:  # removed under us: empty
                            return time.monotonic_ns()
                        raise
                    await changed.wait()
                    inner.poll(0)  # consume, so a stale readiness does not spin us
        except TimeoutError:
            return None
        finally:
            loop.remove_reader(inner.fileno())
    finally:
        inner.close()
        os.close(fd)
