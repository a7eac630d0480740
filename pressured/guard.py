"""The guard: what may never be killed, and how often anything may be.

Applied to every victim every policy returns, built-in or plugin, before the actuator sees it.
The protected set is fixed by the kernel and the configuration; the pacing (cooldown, rate
limit, in-flight) lives in a :class:`~pressured.pacing.Pacing` shared by every guard of the
daemon (reloads and the watchdog included), with an injectable clock so tests need not sleep.
Victims already sent SIGKILL that have not exited (:class:`~pressured.deathwatch.DeathWatch`)
are refused too: killing them again frees nothing.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass

import structlog

from pressured.config import GuardSettings
from pressured.deathwatch import DeathWatch
from pressured.events import VictimKind
from pressured.kernel.cgroupfs import CgroupLayout
from pressured.kernel.procfs import ProcessRecord
from pressured.pacing import Clock, Pacing
from pressured.policies.base import Victim
from pressured.protection import OOM_SCORE_ADJ_NEVER, Protection
from pressured.snapshot import Snapshot

__all__ = ["OOM_SCORE_ADJ_NEVER", "Guard", "Rejection"]

log = structlog.get_logger("pressured.guard")


@dataclass(frozen=True, slots=True)
class Rejection:
    victim: Victim
    reason: str


class Guard:
    def __init__(
        self,
        settings: GuardSettings,
        *,
        self_pid: int | None = None,
        self_cgroup: str | None = None,
        clock: Clock = time.monotonic,
        pacing: Pacing | None = None,
        deaths: DeathWatch | None = None,
        proc_root: str = "/proc",
        layout: CgroupLayout | None = None,
    ) -> None:
        self.settings = settings
        self.self_pid = os.getpid() if self_pid is None else self_pid
        self.self_cgroup = self_cgroup
        self._clock = clock
        self.protection = Protection(
            settings,
            self_pid=self.self_pid,
            self_cgroup=self_cgroup,
            proc_root=proc_root,
            layout=layout,
        )
        self.pacing_state = pacing or Pacing(clock)
        self.deaths = deaths

    # -- who ------------------------------------------------------------------------------
    def process_protection(self, record: ProcessRecord) -> str | None:
        """Why this process must not be killed, or None (see :mod:`pressured.protection`).
        A victim already sent SIGKILL that has not exited is refused first: killing it again
        frees nothing."""
        if self.deaths is not None and self.deaths.is_dying(record.pid, record.start_time):
            return "sent SIGKILL already and not exited (undying)"
        return self.protection.process(record)

    def cgroup_protection(self, path: str, snapshot: Snapshot) -> str | None:
        reason = self.protection.cgroup(path)
        if reason is not None:
            return reason
        # A group is protected if any member is: cgroup.kill would take it down too.
        record = snapshot.cgroup(path)
        if record is None:
            return None
        for pid in record.pids:
            if pid in (1, self.self_pid):
                return f"holds PID {pid}"
            member = snapshot.process(pid)
            if member is not None and (why := self.process_protection(member)):
                return f"member {pid} is protected ({why})"
        return None

    def review(self, snapshot: Snapshot) -> Snapshot:
        """After the scan (on its thread): give the records the executable identity that the
        protection pass read (``exe_dev``/``exe_ino``, so later checks need no ``stat``), and
        say loudly when protection leaves the scope's largest consumer out of the choice: the
        kill that follows takes someone smaller, and whoever reads the log must see why."""
        snapshot = self._with_identities(snapshot)
        largest = max(
            (p for p in snapshot.processes if not p.is_kernel_thread and p.state != "Z"),
            key=lambda p: p.memory_bytes,
            default=None,
        )
        if largest is None or largest.pid not in snapshot.protected:
            return snapshot
        rule = self.process_protection(largest)
        if rule is None:
            return snapshot
        log.warning(
            "protection.largest_excluded",
            scope=snapshot.scope,
            pid=largest.pid,
            comm=largest.comm,
            bytes=largest.memory_bytes,
            rule=rule,
            detail="the largest process in scope is protected and will not be chosen",
        )
        return snapshot

    def _with_identities(self, snapshot: Snapshot) -> Snapshot:
        identities = self.protection.take_identities()
        if not identities:
            return snapshot
        records = []
        for record in snapshot.processes:
            found = identities.get(record.identity)
            if record.exe_dev is None and found is not None:
                records.append(dataclasses.replace(record, exe_dev=found[0], exe_ino=found[1]))
            else:
                records.append(record)
        return dataclasses.replace(snapshot, processes=tuple(records))

    def check(self, victim: Victim, snapshot: Snapshot) -> str | None:
        """Why ``victim`` must be rejected, or None when it may be killed."""
        if victim.kind is VictimKind.CGROUP:
            if victim.cgroup is None or snapshot.cgroup(victim.cgroup) is None:
                return f"cgroup {victim.cgroup!r} is not in the snapshot"
            if self.deaths is not None and self.deaths.is_dying_group(victim.cgroup):
                return f"cgroup {victim.cgroup} was killed already and is not empty (undying)"
            return self.cgroup_protection(victim.cgroup, snapshot)
        if victim.pid is None:
            return "process victim without a pid"
        record = snapshot.process(victim.pid)
        if record is None:
            return f"pid {victim.pid} is not in the snapshot"
        if victim.start_time is not None and victim.start_time != record.start_time:
            return f"pid {victim.pid} start time does not match the snapshot"
        reason = self.process_protection(record)
        if reason is not None:
            return reason
        for pid, start_time in victim.family:
            member = snapshot.process(pid)
            if member is None or member.start_time != start_time:
                return f"family member {pid} is not in the snapshot"
            if (why := self.process_protection(member)) is not None:
                return f"family member {pid} is protected ({why})"
        return None

    # -- when -----------------------------------------------------------------------------
    def pacing(self) -> str | None:
        """Why no kill may start now (in flight, cooldown, rate limit), or None."""
        return self.pacing_state.why_not_now(self.settings.max_kills_per_minute)

    def try_start(self) -> str | None:
        """Check the pacing and count a kill in one step (the watchdog thread): None when the
        kill may go ahead, else why not."""
        return self.pacing_state.try_start(self.settings.max_kills_per_minute)

    def kill_started(self) -> None:
        self.pacing_state.kill_started()

    def kill_finished(self) -> None:
        """The victim is reaped and dying, confirmed dead, or the kill failed: start the
        settle delay."""
        self.pacing_state.kill_finished(self.settings.cooldown_ms / 1000)

    def victim_dying(self, scope: str) -> str | None:
        """Why refault figures of ``scope`` are no evidence yet, or None: a victim of its last
        kill has SIGKILL pending and has not exited, and may still be faulting itself (a
        trigger event, past its stale window, still is evidence)."""
        if self.deaths is not None and self.deaths.confirming(scope):
            return "a victim of this scope is still dying"
        return None

    @property
    def in_flight(self) -> int:
        return self.pacing_state.in_flight
