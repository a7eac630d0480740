"""The values that travel through pressured: pressure events and kill records.

Plain frozen dataclasses, so policies, sinks and library users can hold them without caring
about threads or the loop.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from pressured.kernel.pidfd import MreleaseResult
from pressured.kernel.psi import Pressure, TriggerSpec

SYSTEM_SCOPE = "system"

PRESSURE_LEVEL_KEY = "pressure_level"
"""The one name the PSI level goes by wherever it leaves the process: log lines, the kill
journal, hook facts (``PRESSURED_PRESSURE_LEVEL``), ``/status`` and metric labels. Plain
``level`` is taken by the log line's own severity, so the PSI level never uses it."""


def _with_pressure_level(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its ``level`` key renamed to :data:`PRESSURE_LEVEL_KEY`, in place order."""
    return {PRESSURE_LEVEL_KEY if key == "level" else key: value for key, value in data.items()}


class EventSource(StrEnum):
    PSI = "psi"
    """A kernel PSI trigger fired."""
    RECHECK = "recheck"
    """A follow-up evaluation while an episode lasts."""
    MEMORY = "memory"
    """The memory-availability monitor crossed its threshold."""
    STARVATION = "starvation"
    """The cumulative stall grew past a level's ratio while its trigger stayed silent."""
    WATCHDOG = "watchdog"
    """The watchdog thread acted for a stuck loop."""
    MANUAL = "manual"
    """Made by hand (tests, ``pressured rank``, library users)."""


@dataclass(frozen=True, slots=True)
class PressureEvent:
    """Something said "memory is short here"."""

    scope: str
    """``"system"`` or a cgroup v2 path such as ``/jobs/batch``."""
    level: str
    """The configured level that fired (``"some"``, ``"full"``, or a user's own name)."""
    source: EventSource
    trigger: TriggerSpec | None = None
    """The effective (kernel-accepted) trigger behind a PSI event."""
    pressure: Pressure | None = None
    """Figures read for evidence, where reading them is safe (never the triggered group's own
    file at short intervals)."""
    detail: dict[str, float] = field(default_factory=dict)
    """Extra figures, e.g. ``mem_available_percent`` from the availability monitor."""
    monotonic_ns: int = field(default_factory=time.monotonic_ns)
    wall_time: float = field(default_factory=time.time)
    episode: int = 0
    """Events of one continuing pressure episode share a number."""

    def to_dict(self) -> dict[str, Any]:
        data = _with_pressure_level(asdict(self))
        data["source"] = str(self.source)
        data["trigger"] = str(self.trigger) if self.trigger else None
        return data


class KillReason(StrEnum):
    """Why a kill happened, in one stable word (after lmkd's kill reasons).

    The prose ``KillRecord.reason`` says why the policy chose *this* victim; the word says
    what made pressured decide to kill *at all*, so alerts and dashboards can group kills by
    it (``pressured_kills_total{kill_reason=...}``) without parsing prose.
    """

    CRITICAL_STALL = "critical_stall"
    """A ``full`` trigger fired: every task of the scope stalled on memory at once."""
    STALL = "stall"
    """A ``some`` trigger fired: some tasks stalled on memory."""
    PRESSURE_AFTER_KILL = "pressure_after_kill"
    """The episode's recheck: refaults went on after the last decision (normally a kill)."""
    STARVED_TRIGGER = "starved_trigger"
    """The stall grew past a trigger's threshold while the trigger stayed silent."""
    LOW_MEMORY = "low_memory"
    """The availability monitor saw available memory below its threshold."""
    WATCHDOG = "watchdog"
    """The watchdog thread acted because the event loop did not answer."""
    MANUAL = "manual"
    """Asked for by hand: ``kill_and_reap``, tests, library users' own events."""

    @classmethod
    def of(cls, event: PressureEvent) -> KillReason:
        """The word for a kill decided on ``event``, from its source and trigger kind."""
        if event.source is EventSource.PSI:
            full = event.trigger is not None and event.trigger.kind == "full"
            return cls.CRITICAL_STALL if full else cls.STALL
        return _REASON_BY_SOURCE[event.source]


_REASON_BY_SOURCE = {
    EventSource.RECHECK: KillReason.PRESSURE_AFTER_KILL,
    EventSource.STARVATION: KillReason.STARVED_TRIGGER,
    EventSource.MEMORY: KillReason.LOW_MEMORY,
    EventSource.WATCHDOG: KillReason.WATCHDOG,
    EventSource.MANUAL: KillReason.MANUAL,
}


class VictimKind(StrEnum):
    PROCESS = "process"
    CGROUP = "cgroup"


class KillResult(StrEnum):
    KILLED = "killed"
    """Signalled and confirmed dead."""
    DRY_RUN = "dry_run"
    """Everything but the signal."""
    VANISHED = "vanished"
    """Exited on its own before we signalled: nothing to do, not an error."""
    IDENTITY_CHANGED = "identity_changed"
    """The PID now belongs to another process: refused."""
    DYING = "dying"
    """SIGKILL pending and memory reaped (or reaping failed), no exit yet: the exit is
    confirmed in the background (``victim.exit_confirmed`` or ``victim.undying``)."""
    NOT_CONFIRMED = "not_confirmed"
    """Signalled, but no exit seen within the confirmation limit."""
    FAILED = "failed"
    """The signal could not be sent."""


@dataclass(frozen=True, slots=True)
class KillRecord:
    """One kill, with its evidence and timings: the canonical ``victim.killed`` log line."""

    kind: VictimKind
    target: str
    """``pid 1234 (comm)`` or the cgroup path."""
    pid: int | None
    comm: str
    cgroup: str | None
    policy: str
    reason: str
    scope: str
    level: str
    result: KillResult
    signal: str
    rss_before_bytes: int
    members: int = 1
    mrelease: MreleaseResult | None = None
    event_to_decision_ms: float | None = None
    decision_to_signal_ms: float | None = None
    signal_to_reaped_ms: float | None = None
    signal_to_exit_ms: float | None = None
    trigger: str | None = None
    """The kernel trigger that fired (e.g. ``memory some 140ms/2000ms``), as evidence."""
    pressure_some_avg10: float | None = None
    pressure_full_avg10: float | None = None
    figures: dict[str, float | int | str] = field(default_factory=dict)
    ranking: tuple[tuple[str, float | int | str], ...] = ()
    """The evidence behind the choice: the top of the deciding policy's ranking."""
    wall_time: float = field(default_factory=time.time)
    dry_run: bool = False
    victim_boosted: bool = False
    """mrelease lost the race (ESRCH) and the victim was reniced / taken out of SCHED_IDLE."""
    kill_reason: KillReason = KillReason.MANUAL
    """Why pressured killed at all, in one stable word (``reason`` is the policy's prose)."""
    scan_complete: bool = True
    """False: the snapshot was cut short by its deadline (``partial`` in the log)."""
    scan_read: int | None = None
    """Processes the snapshot read anything of (skimmed or in full)."""
    scan_expected: int | None = None
    """Processes the scope held when the scan began."""
    stages_ms: dict[str, float] = field(default_factory=dict)
    """Milliseconds from the event to each stage of the decision path (dequeued, handled,
    event emitted, scan started/ended, snapshot back on the loop, decided)."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in _with_pressure_level(asdict(self)).items():
            if key == "kill_reason":
                continue
            data[key] = value
            if key == "reason":  # the word beside the prose, where a reader looks for "why"
                data["kill_reason"] = str(self.kill_reason)
        data["kind"] = str(self.kind)
        data["result"] = str(self.result)
        if self.mrelease is not None:
            data["mrelease"] = str(self.mrelease.status)
            data["mrelease_errno"] = self.mrelease.errno
            data["mrelease_attempts"] = self.mrelease.attempts
            data["mrelease_ms"] = round(self.mrelease.duration_ns / 1e6, 3)
        return data
