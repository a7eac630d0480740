"""One watched scope (the system or a cgroup): its triggers, its events, its decisions.

Follow one pressure event downwards through the files:

1. ``monitors/psi.py``: the kernel's trigger fd fires; :class:`TriggerSet` calls back here.
2. ``scope.py`` (this file): ``_on_trigger`` puts a :class:`PressureEvent` in the scope's small
   queue; ``run`` takes it and opens an episode.
3. ``episode.py``: the episode hands the event (and any recheck while the scope keeps
   thrashing) to ``ScopeRunner.handle``.
4. ``scope.py`` ``handle``: snapshot on an I/O thread (``snapshot.py``), the policy chain
   (``policies/chain.py``), the guard (``guard.py``), the actuator (``actuator.py``, then the
   reaper thread in ``reaper.py``), and the kill record goes out through the controller.

A watched group that is removed makes its triggers report EPOLLERR forever: the scope closes
them, logs ``scope.gone`` and waits (``monitors/presence.py``) to arm them again when the
group is created again (``scope.back``).

Besides the triggers, a scope may run the availability monitor (``monitors/availability.py``)
and the starvation check (``starvation.py``); both only offer events to the same queue.
How decisions went is told to a :class:`~pressured.observe.DecisionObserver` the scope is
given (the daemon's metrics), never looked up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import structlog

from pressured.actuator import Actuator
from pressured.attribution import unattributed_recheck
from pressured.config import ScopeSettings
from pressured.episode import EpisodeRules, RefaultReading, follow_episode, read_refaults
from pressured.errors import KernelError
from pressured.events import SYSTEM_SCOPE, EventSource, KillRecord, KillResult, PressureEvent
from pressured.gcpause import collection_paused
from pressured.guard import Guard
from pressured.history import RESAMPLE_S, ProcessHistory
from pressured.kernel import psi
from pressured.kernel.cgroupfs import Cgroup, CgroupLayout
from pressured.kernel.memcg_v1 import resolve_memory_source
from pressured.monitors.availability import AvailabilityMonitor
from pressured.monitors.presence import GroupReturn
from pressured.monitors.psi import ArmedTrigger, TriggerSet
from pressured.observe import DecisionObserver, report_decision, report_scan
from pressured.policies.base import Decision
from pressured.policies.chain import ChainResult, PolicyChain
from pressured.readprobe import RefaultGate, complete_read_rates, probe_for
from pressured.scan.cmdline import CmdlineReader
from pressured.scan.kept import KeptSkims, prewarm_scope, release_departed
from pressured.scan.plan import FamilyKey, ScanPlan, need_of, plan_for, plan_stages
from pressured.scan.stages import StageClock
from pressured.snapshot import RecentKill, Snapshot, take_snapshot
from pressured.starvation import StarvationCheck

log = structlog.get_logger("pressured.scope")

QUEUE_SIZE = 8
MAX_EVENT_AGE_MIN_S = 5.0


@dataclass
class ScopeStats:
    events: int = 0
    dropped_events: int = 0
    decisions: int = 0
    kills: int = 0
    deferred: int = 0
    starved: int = 0
    gone: int = 0
    rearmed: int = 0
    last_event_wall: float | None = None
    fired: dict[str, int] = field(default_factory=dict)


class ScopeRunner:
    def __init__(
        self,
        index: int,
        settings: ScopeSettings,
        *,
        chain: PolicyChain,
        guard: Guard,
        actuator: Actuator,
        io_executor: Executor,
        layout: CgroupLayout | None,
        proc_root: str,
        dry_run: bool,
        emit_event: Callable[[PressureEvent, str | None], Awaitable[None]],
        emit_kill: Callable[[KillRecord], Awaitable[None]],
        recent_kills: Callable[[], tuple[RecentKill, ...]],
        observer: DecisionObserver | None = None,
    ) -> None:
        self.observer = observer
        self.index = index
        self.settings = settings
        self.name = settings.cgroup or SYSTEM_SCOPE
        self.chain = chain
        self.guard = guard
        self.actuator = actuator
        self.io = io_executor
        self.layout = layout
        self.proc_root = proc_root
        self.dry_run = dry_run
        self._emit_event = emit_event
        self._emit_kill = emit_kill
        self._recent_kills = recent_kills
        self.group = (
            Cgroup(layout, settings.cgroup, settings.memcg_v1)
            if settings.cgroup is not None and layout is not None
            else None
        )
        if self.group is not None:
            # Hybrid hosts: say where memory figures come from (or that none do).
            log.info("scope.memory_source", scope=self.name, **resolve_memory_source(self.group))
        self.queue: asyncio.Queue[PressureEvent] = asyncio.Queue(QUEUE_SIZE)
        self.triggers: TriggerSet | None = None
        self.availability: AvailabilityMonitor | None = None
        self.stats = ScopeStats()
        self.decision_started: float | None = None
        """Monotonic time the decision in progress began (snapshot, then policies), or None."""
        self.decision_phase: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._return: GroupReturn | None = None
        self._episode = 0
        self.privileged = False
        self._last_kill_done_ns = -(10**18)
        self._last_result: ChainResult | None = None
        # The short second sample costs each episode's first decision ~200 ms: only for a
        # chain that ranks on rates.
        self.history = ProcessHistory(
            proc_root=proc_root, resample_s=RESAMPLE_S * chain.wants_history
        )
        # The scan's command-line reader: a disposable thread, so a process stuck in a fault
        # cannot hold the I/O pool.
        self.cmdlines = CmdlineReader(proc_root=proc_root)
        # Skim files kept open between events; a large skim reads half on the other I/O thread.
        self.kept_skims = KeptSkims(proc_root, helper=self.io)
        # A read probe only while the scope refaults (pressured.readprobe).
        self.read_gate = RefaultGate(lambda: read_refaults(self.group, self.proc_root))
        self.scan_deadline_s = 2.0
        self.scan_clock: Callable[[], float] = time.monotonic  # a seam for deadline tests
        self._dequeued_ns: int | None = None

    # -- arming ---------------------------------------------------------------------------
    def pressure_path(self) -> str:
        if self.group is not None:
            return str(self.group.pressure_path("memory"))
        return str(psi.system_pressure_path("memory", self.proc_root))

    def arm(self, loop: asyncio.AbstractEventLoop, *, privileged: bool) -> tuple[ArmedTrigger, ...]:
        """Open every level's trigger. Raises TriggerError/TriggerSpecError before any is kept."""
        self.privileged = privileged
        self._loop = loop
        self.triggers = self._open_triggers(loop)
        if self.settings.availability.enabled:
            self.availability = AvailabilityMonitor(
                self.settings.availability,
                scope=self.name,
                group=self.group,
                proc_root=self.proc_root,
                io_executor=self.io,
                on_low=self._offer,
            )
        return self.triggers.armed

    def _open_triggers(self, loop: asyncio.AbstractEventLoop) -> TriggerSet:
        triggers = TriggerSet(loop, self._on_trigger, self._on_gone)
        try:
            for level in self.settings.levels:
                armed = triggers.arm(
                    level.name, self.pressure_path(), level.trigger(), privileged=self.privileged
                )
                if armed.adjustment is not None:
                    log.warning(
                        "trigger.adjusted",
                        scope=self.name,
                        level=level.name,
                        requested=str(armed.requested),
                        effective=str(armed.effective),
                        reason=armed.adjustment.reason,
                    )
                log.info("trigger.armed", scope=self.name, **armed.describe())
        except BaseException:
            triggers.close()
            raise
        return triggers

    def disarm(self) -> None:
        if self.triggers is not None:
            self.triggers.close()
            self.triggers = None
        if self._return is not None:
            self._return.close()
            self._return = None

    async def aclose(self) -> None:
        """Retire the scope (stop, or replaced by a reload): every resource it holds goes
        with it, so reloads cannot pile up fds or threads."""
        self.disarm()
        # The skim files kept open between events (up to one fd per process in scope) and
        # the command-line reader's idle thread belong to this runner alone.
        self.kept_skims.close()
        self.cmdlines.close()
        await self.chain.aclose()

    # -- a watched group that goes away and comes back -------------------------------------
    @property
    def waiting_for_group(self) -> bool:
        """True while the scope's group is gone and the scope waits for it to return."""
        return self._return is not None and self._return.waiting

    def _on_gone(self, armed: ArmedTrigger) -> None:
        """The group was removed: its triggers report EPOLLERR on every poll from now on.
        Close them all at once (no flood of events, no spinning) and wait for the group."""
        if self.triggers is None:
            return
        self.triggers.close()
        self.triggers = None
        self.stats.gone += 1
        log.warning(
            "scope.gone",
            scope=self.name,
            path=armed.path,
            detail="the watched cgroup was removed; its triggers are closed and are armed "
            "again as soon as it is created again",
        )
        if self.group is None or self._loop is None:
            return  # the system scope's pressure file does not go away
        self._return = GroupReturn(self._loop, self.group.directory, self._rearm, scope=self.name)
        self._return.start()

    def _rearm(self) -> None:
        assert self._loop is not None  # noqa: S101 - set by arm()
        self.triggers = self._open_triggers(self._loop)
        self.stats.rearmed += 1
        log.info("scope.back", scope=self.name, triggers=len(self.triggers.armed))

    @property
    def episode_window_s(self) -> float:
        windows = [t.effective.window_us for t in (self.triggers.armed if self.triggers else ())]
        return max(windows, default=2_000_000) / 1e6

    # -- events ---------------------------------------------------------------------------
    def _on_trigger(self, armed: ArmedTrigger) -> None:
        self.stats.fired[armed.level] = self.stats.fired.get(armed.level, 0) + 1
        self._offer(
            PressureEvent(
                scope=self.name,
                level=armed.level,
                source=EventSource.PSI,
                trigger=armed.effective,
                episode=self._episode,
            )
        )

    def _offer(self, event: PressureEvent) -> None:
        """Queue an event from a loop callback. A full queue means a decision is already
        pending for this scope: the newest events carry no new information, so drop them."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.stats.dropped_events += 1

    def background(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """The scope's long-lived tasks by name, for the controller to start (each one under
        its own supervisor, so one failing never takes the others down)."""
        tasks: dict[str, Callable[[], Awaitable[None]]] = {f"scope:{self.name}": self.run}
        if self.availability is not None:
            tasks[f"avail:{self.name}"] = self.availability.run
        starvation = self.starvation_check()
        if starvation is not None:
            tasks[f"starve:{self.name}"] = starvation.run
        return tasks

    async def run(self) -> None:
        """Wait for events forever; after each, follow the episode until it quiets down."""
        # Triggers are armed: open the scan's skim files now, once, so the first event only
        # pays for processes started since (pressured.scan.kept). Never raises.
        plan = self.scan_stages()[0]
        files = plan.skim_files if plan is not None else ("statm",)
        await asyncio.get_running_loop().run_in_executor(
            self.io, prewarm_scope, self.kept_skims, files, self.group, self.proc_root
        )
        await asyncio.get_running_loop().run_in_executor(self.io, self.read_gate.mark)
        while True:
            event = await self.queue.get()
            self._dequeued_ns = time.monotonic_ns()
            self._episode += 1
            await follow_episode(
                event,
                number=self._episode,
                rules=self.episode_rules(),
                queue=self.queue,
                handle=self.handle,
                refaults=self._refaults,
                paced=lambda: self.guard.pacing() is not None,
                dying=lambda: self.guard.victim_dying(self.name) is not None,
                scope=self.name,
            )

    def episode_rules(self) -> EpisodeRules:
        return EpisodeRules(
            window_s=self.episode_window_s,
            recheck_interval_s=self.settings.recheck_interval_ms / 1000,
            refaults_per_s=self.settings.recheck_refaults_per_s,
        )

    def starvation_check(self) -> StarvationCheck | None:
        """The check for this scope, or None where it does not apply.

        Only unprivileged triggers can be starved by readers (privileged ones are checked by
        the kernel's real-time poller): with CAP_SYS_RESOURCE the check, and its one wake-up
        every starvation_check_s, is skipped.
        """
        if not self.settings.starvation_check_s or self.triggers is None or self.privileged:
            return None
        return StarvationCheck(
            scope=self.name,
            interval_s=self.settings.starvation_check_s,
            read_pressure=self.read_pressure,
            armed=lambda: self.triggers.armed if self.triggers else (),
            fired=lambda: sum(self.stats.fired.values()),
            on_starved=self._on_starved,
            refaults=self.read_refaults_now,
            refaults_per_s=self.settings.recheck_refaults_per_s,
        )

    def _on_starved(self, event: PressureEvent) -> None:
        self.stats.starved += 1
        self._offer(event)

    def read_pressure(self) -> psi.Pressure | None:
        # Read on the loop thread, on purpose: a pressure file is generated from in-kernel
        # counters (no mmap lock, nothing that waits on reclaim), and skipping the hop to a
        # worker thread makes each idle check one wake-up instead of three.
        try:
            return psi.read_pressure(self.pressure_path())
        except (OSError, ValueError):
            return None

    def read_refaults_now(self) -> RefaultReading | None:
        """(cumulative refaults, monotonic time), read on the loop thread, for the starvation
        check: ``memory.stat`` and ``vmstat`` are made from in-kernel counters (no mmap lock,
        no wait on reclaim), and a hop to a worker would wake two more threads per check."""
        try:
            return read_refaults(self.group, self.proc_root), time.monotonic()
        except (OSError, ValueError):
            return None

    async def _refaults(self) -> RefaultReading | None:
        """:meth:`read_refaults_now` on the I/O thread, for the episode's rechecks."""
        return await asyncio.get_running_loop().run_in_executor(self.io, self.read_refaults_now)

    def scan_stages(self) -> list[ScanPlan | None]:
        """The chain's scan plans, policy by policy (:func:`pressured.scan.plan.plan_stages`);
        an empty chain reads no process."""
        return plan_stages([link.policy for link in self.chain.links]) or [plan_for(())]

    def _family_keys(self) -> list[FamilyKey]:
        needs = (need_of(link.policy) for link in self.chain.links if not link.disabled)
        return [need for need in needs if isinstance(need, FamilyKey)]

    async def take_snapshot(self, event: PressureEvent, plan: ScanPlan | None) -> Snapshot:
        loop = asyncio.get_running_loop()
        cgroup_path = self.settings.cgroup
        memcg = self.group.memcg_v1_path if self.group else None
        recent = self._recent_kills()
        keys = self._family_keys()

        def _take() -> Snapshot:
            probe = probe_for(keys, self.proc_root, self.read_gate)
            snapshot = take_snapshot(
                event,
                layout=self.layout,
                proc_root=self.proc_root,
                cgroup_path=cgroup_path,
                memcg_v1_path=memcg,
                read_scope_pressure=False,
                recent_kills=recent,
                protection=self.guard.process_protection,
                deadline_s=self.scan_deadline_s,
                clock=self.scan_clock,
                plan=plan,
                cmdlines=self.cmdlines,
                kept=self.kept_skims,
                read_probe=probe,
            )
            # Growth needs history (or a short second sample), a full scan's size fallback
            # its storage reads; then say if protection keeps the largest consumer out.
            completed = self.history.complete(snapshot)
            if plan is None:
                completed = complete_read_rates(completed, keys, probe)
            return self.guard.review(completed)

        return await loop.run_in_executor(self.io, _take)

    async def _decide(
        self, event: PressureEvent, stages: StageClock
    ) -> tuple[Snapshot, ChainResult]:
        """The decision path: snapshot, then the policy chain. Timed from outside through
        ``decision_started`` so ``/healthz`` can name a scope stuck in it."""
        self.decision_started = time.monotonic()
        stages_of_scan = self.scan_stages()
        read_for = stages_of_scan[0]  # the plan of the snapshot in hand

        async def widen(index: int, current: Snapshot) -> Snapshot:
            """A policy that needs more than the snapshot in hand read gets a new one, taken
            when (and only when) the chain reaches it."""
            nonlocal read_for
            plan = stages_of_scan[index]
            if plan is read_for:
                return current
            self.decision_phase = "snapshot"
            read_for = plan
            try:
                return await self.take_snapshot(event, plan)
            finally:
                self.decision_phase = "policies"

        try:
            self.decision_phase = "snapshot"
            snapshot = await self.take_snapshot(event, read_for)
            stages.mark("snapshot")
            if snapshot.scan_started_monotonic_ns:
                started = snapshot.scan_started_monotonic_ns
                stages.mark("scan_start", started)
                stages.mark("cgroups_read", started + snapshot.cgroups_read_ns)
                stages.mark("scan_end", started + snapshot.scan_duration_ns)
            for problem in snapshot.problems:
                log.warning(
                    "scan.problem", scope=self.name, pid=problem.pid, problem=problem.problem
                )
            unattributed = unattributed_recheck(
                event, snapshot, self.settings.recheck_refaults_per_s
            )
            if unattributed is not None:
                return snapshot, ChainResult(Decision.no_action(unattributed))
            self.decision_phase = "policies"
            result = await self.chain.decide(snapshot, self.guard.check, widen)
            return result.widened or snapshot, result
        finally:
            self.decision_started = self.decision_phase = None

    async def handle(self, event: PressureEvent) -> KillRecord | None:
        """Decide and act on one event. Never raises for a policy's or a victim's fault."""
        with collection_paused():  # no collector pause between the event and the kill
            return await self._handle(event)

    async def _handle(self, event: PressureEvent) -> KillRecord | None:
        self.stats.events += 1
        self.stats.last_event_wall = event.wall_time
        stages = StageClock(event.monotonic_ns)
        if self._dequeued_ns is not None and self._dequeued_ns >= event.monotonic_ns:
            stages.mark("dequeued", self._dequeued_ns)
        stages.mark("handling")
        pacing = self.guard.pacing() or self._stale(event)
        await self._emit_event(event, pacing)
        stages.mark("emitted")
        if pacing is not None:
            self.stats.deferred += 1
            return None
        snapshot, result = await self._decide(event, stages)
        decided_ns = time.monotonic_ns()
        stages.mark("decided", decided_ns)
        self._last_result = result
        self.stats.decisions += 1
        decision = result.decision
        if self.observer is not None:
            report_scan(self.observer, self.name, snapshot)
            report_decision(
                self.observer, self.name, result, (decided_ns - event.monotonic_ns) / 1e9
            )
        if not decision.acts:
            log.info(
                "policy.no_action",
                scope=self.name,
                level=event.level,
                source=str(event.source),
                reason=decision.reason,
                candidates=len(snapshot.candidates),
                scan_complete=snapshot.complete,
                scan_read=snapshot.read_processes,
                scan_expected=snapshot.expected_processes,
                stages_ms=stages.ms(),
            )
            return None
        victim = decision.victims[0]
        log.info(
            "policy.decided",
            scope=self.name,
            level=event.level,
            policy=decision.policy,
            victim=victim.describe(),
            reason=victim.reason,
            ranking=list(decision.ranking),
            scan_ms=round(snapshot.scan_duration_ns / 1e6, 3),
            processes=len(snapshot.processes),
        )
        self.guard.kill_started()
        try:
            record = await self.actuator.execute(
                victim, snapshot, decision, decided_ns=decided_ns, dry_run=self.dry_run
            )
        except (OSError, KernelError) as exc:
            # A cgroup removed mid-kill, an fd refused: this kill failed, the scope goes on.
            log.error(
                "victim.kill_failed", scope=self.name, victim=victim.describe(), error=repr(exc)
            )
            return None
        finally:
            self.guard.kill_finished()
        record = dataclasses.replace(
            record,
            scan_complete=snapshot.complete,
            scan_read=snapshot.read_processes,
            scan_expected=snapshot.expected_processes,
            stages_ms=stages.ms(),
        )
        self.stats.kills += 1
        if record.result in (KillResult.KILLED, KillResult.DYING):  # dying: memory reaped
            self._last_kill_done_ns = time.monotonic_ns()
        await self._emit_kill(record)
        if record.result in (KillResult.KILLED, KillResult.DYING):
            await asyncio.get_running_loop().run_in_executor(
                self.io, release_departed, self.kept_skims, self.group, self.proc_root
            )
        return record

    def decision_limit_s(self, margin_s: float) -> float:
        """How long a decision may take before it counts as stuck: every policy's own time
        limit (the chain waits out each in turn at worst) plus ``margin_s`` for the scan."""
        return margin_s + sum(link.timeout_s for link in self.chain.links)

    def stuck_decision(self, now: float, margin_s: float) -> str | None:
        """Why this scope's decision path is stuck, or None."""
        started = self.decision_started
        if started is None or now - started <= self.decision_limit_s(margin_s):
            return None
        return (
            f"scope {self.name}: decision stuck in {self.decision_phase} for {now - started:.1f} s"
        )

    def _stale(self, event: PressureEvent) -> str | None:
        """Why a trigger event only reports the stall a kill has already relieved, or None.

        A PSI trigger judges its window's stall growth, and the kernel carries a share of the
        *previous* window's growth into it (``window_update`` in kernel/sched/psi.c), so an
        event at time t can still count stall from as far back as t - 2 windows. If the last
        kill finished after that, the stall may be the very one the kill ended, and acting on
        it would take a second, innocent victim (seen in the soak run: a bystander killed one
        window after the thrasher). Continuing pressure is not missed: the episode's refault
        recheck sees it at once, and the trigger fires again once its windows are clean.
        """
        waited = self._waited_too_long(event)
        if waited is not None:
            return waited
        if event.source is EventSource.STARVATION:
            stale_ns = int(self.settings.starvation_check_s * 1e9)
        elif event.source is EventSource.PSI and event.trigger is not None:
            stale_ns = 2 * event.trigger.window_us * 1000
        else:
            return None
        since_kill = event.monotonic_ns - self._last_kill_done_ns
        if since_kill < stale_ns:
            return (
                f"stale: it may count stall from before the kill that ended "
                f"{since_kill / 1e9:.2f} s earlier (windows reach back {stale_ns / 1e9:g} s)"
            )
        return None

    def _waited_too_long(self, event: PressureEvent) -> str | None:
        """Why an event that waited too long before being handled is old news, or None.

        An event waits in the queue while the scope is busy, and longer while its task is
        restarted after a crash (seen in the fault soak: a PSI event handled 44 s late, when
        the thrasher behind it was long gone, took a bystander). Past two trigger windows (at
        least ``MAX_EVENT_AGE_MIN_S``) it says nothing about now; pressure that continues
        fires the trigger again. Manual events are a caller's explicit request: never aged.
        """
        if event.source is EventSource.MANUAL:
            return None
        limit_s = max(MAX_EVENT_AGE_MIN_S, 2 * self.episode_window_s)
        age_s = (time.monotonic_ns() - event.monotonic_ns) / 1e9
        if age_s <= limit_s:
            return None
        return f"stale: waited {age_s:.1f} s to be handled (more than {limit_s:g} s)"
