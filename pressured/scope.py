"""One watched scope (the system or a cgroup): its triggers, its policy chain, its episodes.

A pressure event goes: trigger callback -> the scope's small queue -> ``handle`` (snapshot on
the I/O thread, chain, guard, actuator) -> kill record. After an event the scope stays in an
*episode* for one trigger window and re-evaluates every ``recheck_interval_ms`` while the scope
keeps thrashing. The evidence is the refault rate (pages evicted and needed again, the main
source of memory stall: ``workingset_refault_*`` in the group's ``memory.stat`` or in
``/proc/vmstat``), never the watched group's own pressure file: reading that at short intervals
would starve its unprivileged triggers (DESIGN.md). A memcg at its limit reclaims page cache
all the time without anyone stalling, so limit hits and scans are not evidence; refaults are.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from pressured.actuator import Actuator
from pressured.config import ScopeSettings
from pressured.errors import KernelError
from pressured.events import SYSTEM_SCOPE, EventSource, KillRecord, KillResult, PressureEvent
from pressured.guard import Guard
from pressured.history import RESAMPLE_S, ProcessHistory
from pressured.kernel import psi
from pressured.kernel.cgroupfs import Cgroup, CgroupLayout
from pressured.kernel.memcg_v1 import resolve_memory_source
from pressured.monitors.availability import AvailabilityMonitor
from pressured.monitors.psi import ArmedTrigger, TriggerSet
from pressured.policies.chain import ChainResult, PolicyChain
from pressured.scan.cmdline import CmdlineReader
from pressured.scan.kept import KeptSkims, prewarm_scope
from pressured.scan.plan import plan_for
from pressured.scan.stages import StageClock
from pressured.snapshot import RecentKill, ScanProgress, Snapshot, take_snapshot

if TYPE_CHECKING:
    from pressured.ops.metrics import Metrics

log = structlog.get_logger("pressured.scope")

QUEUE_SIZE = 8


@dataclass
class ScopeStats:
    events: int = 0
    dropped_events: int = 0
    decisions: int = 0
    kills: int = 0
    deferred: int = 0
    starved: int = 0
    last_event_wall: float | None = None
    fired: dict[str, int] = field(default_factory=dict)


_REFAULT_KEYS = (
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_refault",  # kernels before 5.9 had one counter
)


def read_refaults(cgroup: Cgroup | None, proc_root: str) -> int:
    """Cumulative refaults of the scope (hierarchical for a cgroup). Cheap, and touches no
    pressure file."""
    if cgroup is not None:
        stat = cgroup.memory_stat()
        # v1 memory.stat keeps the hierarchical sums under total_*; v2's are hierarchical.
        total = sum(stat.get(f"total_{key}", 0) for key in _REFAULT_KEYS)
        return total or sum(stat.get(key, 0) for key in _REFAULT_KEYS)
    total = 0
    with open(f"{proc_root}/vmstat", encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(" ")
            if key in _REFAULT_KEYS:
                total += int(value)
    return total


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
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
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
        self._episode = 0
        self.privileged = False
        self._last_kill_done_ns = -(10**18)
        self._last_result: ChainResult | None = None
        # The short second sample costs each episode's first decision ~200 ms: only for a
        # chain that ranks on rates.
        self.history = ProcessHistory(
            proc_root=proc_root, resample_s=RESAMPLE_S * chain.wants_history
        )
        # The scan's state for /healthz (when the running scan began) and its command-line
        # reader: a disposable thread, so a process stuck in a fault cannot hold the I/O pool.
        self.scan_progress = ScanProgress()
        self.cmdlines = CmdlineReader(proc_root=proc_root)
        self.kept_skims = KeptSkims(proc_root)  # skim files kept open between events
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
        triggers = TriggerSet(loop, self._on_trigger)
        try:
            for level in self.settings.levels:
                armed = triggers.arm(
                    level.name, self.pressure_path(), level.trigger(), privileged=privileged
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
        self.triggers = triggers
        if self.settings.availability.enabled:
            self.availability = AvailabilityMonitor(
                self.settings.availability,
                scope=self.name,
                group=self.group,
                proc_root=self.proc_root,
                io_executor=self.io,
                on_low=self._offer,
            )
        return triggers.armed

    def disarm(self) -> None:
        if self.triggers is not None:
            self.triggers.close()
            self.triggers = None

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

    async def run(self) -> None:
        """Wait for events forever; after each, follow the episode until it quiets down."""
        tasks = []
        if self.availability is not None:
            tasks.append(asyncio.create_task(self.availability.run(), name=f"avail:{self.name}"))
        # Only unprivileged triggers can be starved by readers (privileged ones are checked by
        # the kernel's real-time poller): with CAP_SYS_RESOURCE the check, and its one wake-up
        # every starvation_check_s, is skipped.
        if self.settings.starvation_check_s and self.triggers is not None and not self.privileged:
            tasks.append(asyncio.create_task(self.watch_starvation(), name=f"starve:{self.name}"))
        # Triggers are armed: open the scan's skim files now, once, so the first event only
        # pays for processes started since (pressured.scan.kept). Never raises.
        plan = plan_for(link.policy for link in self.chain.links)
        files = plan.skim_files if plan is not None else ("statm",)
        await asyncio.get_running_loop().run_in_executor(
            self.io, prewarm_scope, self.kept_skims, files, self.group, self.proc_root
        )
        try:
            while True:
                event = await self.queue.get()
                self._dequeued_ns = time.monotonic_ns()
                self._episode += 1
                await self._episode_loop(event)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def read_pressure(self) -> psi.Pressure | None:
        # Read on the loop thread, on purpose: a pressure file is generated from in-kernel
        # counters (no mmap lock, nothing that waits on reclaim), and skipping the hop to a
        # worker thread makes each idle check one wake-up instead of three.
        try:
            return psi.read_pressure(self.pressure_path())
        except (OSError, ValueError):
            return None

    async def watch_starvation(self) -> None:
        """Every ``starvation_check_s`` (>= 10 s, so the check itself starves nothing), see
        whether the scope stalled past a level's ratio while no trigger fired at all. That is
        what a frequent reader of the pressure file does to unprivileged triggers: say so
        loudly, and act on the pressure ourselves."""
        interval = self.settings.starvation_check_s
        last = self.read_pressure()
        last_fired = sum(self.stats.fired.values())
        while True:
            await asyncio.sleep(interval)
            current = self.read_pressure()
            fired = sum(self.stats.fired.values())
            if current is not None and last is not None and fired == last_fired:
                for armed in self.triggers.armed if self.triggers else ():
                    now_line, then_line = (
                        current.line(armed.effective.kind),
                        last.line(armed.effective.kind),
                    )
                    if now_line is None or then_line is None:
                        continue
                    ratio = (now_line.total_us - then_line.total_us) / (interval * 1e6)
                    if ratio >= armed.effective.stall_ratio:
                        self.stats.starved += 1
                        log.error(
                            "trigger.starved",
                            scope=self.name,
                            level=armed.level,
                            stall_ratio=round(ratio, 4),
                            trigger_ratio=round(armed.effective.stall_ratio, 4),
                            interval_s=interval,
                            privileged=False,
                            detail="stall grew past the trigger's threshold but no event came: "
                            "something reading this pressure file often (a monitoring agent?) "
                            "is starving unprivileged triggers; acting on it now. Grant "
                            "CAP_SYS_RESOURCE or stop the frequent reader.",
                        )
                        self._offer(
                            PressureEvent(
                                scope=self.name,
                                level=armed.level,
                                source=EventSource.STARVATION,
                                trigger=armed.effective,
                                pressure=current,
                                detail={"stall_ratio": ratio},
                            )
                        )
                        break
            last, last_fired = current, fired

    async def _episode_loop(self, first: PressureEvent) -> None:
        event: PressureEvent | None = first
        window_s = self.episode_window_s
        interval = self.settings.recheck_interval_ms / 1000
        ends = time.monotonic() + window_s
        # No refault reading before the first decision: handle() replaces it at once anyway,
        # and it put one memory.stat read through the I/O pool in front of every first
        # decision (0.6-0.8 ms measured under thrash; longer when the pool is busy).
        baseline: tuple[int, float] | None = None
        while True:
            if event is not None:
                ends = time.monotonic() + window_s
                await self.handle(event)
                baseline = await self._refaults()
            remaining = ends - time.monotonic()
            if remaining <= 0:
                log.debug("episode.ended", scope=self.name, episode=self._episode)
                return
            try:
                async with asyncio.timeout(min(interval, remaining)):
                    event = await self.queue.get()
                continue
            except TimeoutError:
                event = None
            if self.guard.victim_dying(self.name) is not None:
                baseline = await self._refaults()  # its own faults are no evidence
                continue
            if self.guard.pacing() is not None:
                continue
            current = await self._refaults()
            if current is not None and baseline is not None:
                rate = (current[0] - baseline[0]) / max(1e-3, current[1] - baseline[1])
                if rate >= self.settings.recheck_refaults_per_s:
                    event = PressureEvent(
                        scope=self.name,
                        level=first.level,
                        source=EventSource.RECHECK,
                        trigger=first.trigger,
                        episode=self._episode,
                        detail={"refaults_per_s": round(rate, 1)},
                    )
            baseline = current

    async def _refaults(self) -> tuple[int, float] | None:
        """(cumulative refaults, monotonic time of the reading), or None if unreadable."""
        loop = asyncio.get_running_loop()
        try:
            count = await loop.run_in_executor(self.io, read_refaults, self.group, self.proc_root)
        except (OSError, ValueError):
            return None
        return count, time.monotonic()

    async def take_snapshot(self, event: PressureEvent) -> Snapshot:
        loop = asyncio.get_running_loop()
        cgroup_path = self.settings.cgroup
        memcg = self.group.memcg_v1_path if self.group else None
        recent = self._recent_kills()
        plan = plan_for(link.policy for link in self.chain.links)

        def _take() -> Snapshot:
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
                progress=self.scan_progress,
                kept=self.kept_skims,
            )
            # Growth needs history (or a short second sample); then say if protection keeps
            # the largest consumer out of the choice.
            return self.guard.review(self.history.complete(snapshot))

        return await loop.run_in_executor(self.io, _take)

    async def handle(self, event: PressureEvent) -> KillRecord | None:
        """Decide and act on one event. Never raises for a policy's or a victim's fault."""
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
        snapshot = await self.take_snapshot(event)
        stages.mark("snapshot")
        if snapshot.scan_started_monotonic_ns:
            stages.mark("scan_start", snapshot.scan_started_monotonic_ns)
            stages.mark(
                "cgroups_read", snapshot.scan_started_monotonic_ns + snapshot.cgroups_read_ns
            )
            stages.mark("scan_end", snapshot.scan_started_monotonic_ns + snapshot.scan_duration_ns)
        for problem in snapshot.problems:
            log.warning("scan.problem", scope=self.name, pid=problem.pid, problem=problem.problem)
        result = await self.chain.decide(snapshot, self.guard.check)
        decided_ns = time.monotonic_ns()
        stages.mark("decided", decided_ns)
        self._last_result = result
        self.stats.decisions += 1
        decision = result.decision
        if self.metrics is not None:
            failed = {failure.policy: failure.kind for failure in result.failures}
            for policy, duration in result.durations_s.items():
                self.metrics.observe_policy(policy, duration, failed.get(policy))
            self.metrics.observe_decision(
                self.name,
                (decided_ns - event.monotonic_ns) / 1e9,
                "kill" if decision.acts else "no_action",
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
        return record

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
