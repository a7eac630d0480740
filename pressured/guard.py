"""The guard: what may never be killed, and how often anything may be.

Applied to every victim every policy returns, built-in or plugin, before the actuator sees it.
The protected set is fixed by the kernel and the configuration; the pacing (cooldown, rate
limit, in-flight) lives in a :class:`~pressured.pacing.Pacing` shared by every guard of the
daemon (reloads and the watchdog included), with an injectable clock so tests need not sleep.
Victims already sent SIGKILL that have not exited (:class:`~pressured.deathwatch.DeathWatch`)
are refused too: killing them again frees nothing.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from pressured.config import GuardSettings
from pressured.deathwatch import DeathWatch
from pressured.events import VictimKind
from pressured.kernel.procfs import ProcessRecord
from pressured.pacing import Clock, Pacing
from pressured.policies.base import Victim
from pressured.snapshot import Snapshot

OOM_SCORE_ADJ_NEVER = -1000


def _within(path: str | None, roots: tuple[str, ...]) -> str | None:
    if path is None:
        return None
    for root in roots:
        if root in ("/", path) or path.startswith(root.rstrip("/") + "/"):
            return root
    return None


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
    ) -> None:
        self.settings = settings
        self.self_pid = os.getpid() if self_pid is None else self_pid
        self.self_cgroup = self_cgroup
        self._clock = clock
        self._names = frozenset(settings.protect_names)
        self._cmdline = [re.compile(pattern) for pattern in settings.protect_cmdline]
        self._uids = frozenset(settings.protect_uids)
        self.pacing_state = pacing or Pacing(clock)
        self.deaths = deaths

    # -- who ------------------------------------------------------------------------------
    def process_protection(self, record: ProcessRecord) -> str | None:
        """Why this process must not be killed, or None."""
        if self.deaths is not None and self.deaths.is_dying(record.pid, record.start_time):
            return "sent SIGKILL already and not exited (undying)"
        if record.pid == 1:
            return "PID 1"
        if record.pid == self.self_pid:
            return "pressured itself"
        if record.is_kernel_thread:
            return "kernel thread"
        if record.oom_score_adj <= OOM_SCORE_ADJ_NEVER:
            return "oom_score_adj is -1000"
        if record.comm in self._names:
            return f"protected name {record.comm!r}"
        if record.uid in self._uids:
            return f"protected uid {record.uid}"
        for pattern in self._cmdline:
            if pattern.search(record.cmdline):
                return f"protected cmdline pattern {pattern.pattern!r}"
        root = _within(record.cgroup, self.settings.protect_cgroups)
        if root is not None:
            return f"in protected cgroup {root}"
        return None

    def cgroup_protection(self, path: str, snapshot: Snapshot) -> str | None:
        if path in ("", "/"):
            return "the root cgroup"
        if self.self_cgroup is not None and _within(self.self_cgroup, (path,)):
            return "holds pressured itself"
        root = _within(path, self.settings.protect_cgroups)
        if root is not None:
            return f"protected cgroup {root}"
        # A group is protected if any member is: cgroup.kill would take it down too.
        record = snapshot.cgroup(path)
        if record is None:
            return None
        for pid in record.pids:
            if pid in (1, self.self_pid):
                return f"holds PID {pid}"
            member = snapshot.process(pid)
            if member is not None and (reason := self.process_protection(member)):
                return f"member {pid} is protected ({reason})"
        return None

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
        return self.process_protection(record)

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
