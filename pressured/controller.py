"""The controller: owns the threads, the scopes and the root task group.

Embedders use ``async with Controller(settings) as controller`` (or ``await
controller.serve()``) inside their own loop; ``pressured run`` does the same through
:func:`pressured.run`, the one place a loop is created.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from pressured import supervision
from pressured.actuator import Actuator, PreKillHook
from pressured.config import Settings
from pressured.deathwatch import DeathWatch
from pressured.errors import ConfigError, PressuredError
from pressured.events import KillRecord, KillResult, PressureEvent
from pressured.guard import Guard
from pressured.kernel import cgroupfs, psi
from pressured.kernel.cgroupfs import CgroupLayout
from pressured.monitors.psi import ArmedTrigger
from pressured.ops import Sink
from pressured.pacing import Pacing
from pressured.policies.chain import PolicyChain
from pressured.reaper import Reaper, ThreadInfo
from pressured.scope import ScopeRunner
from pressured.selfprotect import lock_memory, protect_from_oom, raise_fd_limit
from pressured.snapshot import RecentKill
from pressured.startclock import seconds_since_exec
from pressured.watchdog import Watchdog, watched_scope

if TYPE_CHECKING:
    from pressured.ops.metrics import Metrics

log = structlog.get_logger("pressured.controller")

RECENT_KILLS = 32
SUBSCRIBER_QUEUE = 256
SINK_TIMEOUT_S = 2.0
DECISION_MARGIN_S = 10.0
"""Beyond the policies' own time limits, how long a scope's decision (mostly its scan) may
take before ``health()`` calls its decision path stuck."""

ControllerEvent = PressureEvent | KillRecord
SignalHandler = Callable[[int, FrameType | None], Any] | int | None
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
ReloadSource = Callable[[], Settings | Awaitable[Settings]]
"""Where a reload gets the new configuration: a function, or a coroutine function."""


class Controller:
    """Monitors, policies, guard, actuator and reaper for every configured scope."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        reload: ReloadSource | None = None,
        handle_signals: bool = False,
        early_signals: Callable[[], Sequence[signal.Signals]] | None = None,
        protect_self: bool = False,
        sinks: Sequence[Sink] = (),
        reaper: Reaper | None = None,
        metrics: Metrics | None = None,
        pre_kill: PreKillHook | None = None,
        after_reload: Callable[[], Awaitable[None]] | None = None,
        on_stop: Callable[[], object] | None = None,
        decision_margin_s: float = DECISION_MARGIN_S,
        backoff: supervision.Backoff | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self._reload_source = reload
        self._handle_signals = handle_signals
        # With handle_signals: the signals that came before our handlers existed (kept by
        # `pressured run`'s start-up handlers), acted on as soon as ours are installed.
        self._early_signals = early_signals
        self._protect_self = protect_self
        self._sinks = list(sinks)
        self.metrics = metrics
        self._pre_kill = pre_kill
        self._after_reload = after_reload
        self._on_stop = on_stop
        self._decision_margin_s = decision_margin_s
        self._backoff = backoff or supervision.Backoff()
        self.tasks: dict[str, supervision.TaskRecord] = {}
        """Every supervised task by name: starts, crashes, last error."""
        self._own_reaper = reaper is None
        self.reaper = reaper or self._make_reaper(self.settings)
        # Kill history and dying victims outlive any one configuration (SIGHUP) and are
        # shared with the watchdog thread.
        self.pacing = Pacing()
        self.deaths = DeathWatch(on_settled=self._kill_settled)
        self.layout: CgroupLayout | None = None
        self.privileged = False
        self.scopes: list[ScopeRunner] = []
        self.recent: deque[KillRecord] = deque(maxlen=RECENT_KILLS)
        self.reaper_info: ThreadInfo | None = None
        self.watchdog: Watchdog | None = None
        self._io: ThreadPoolExecutor | None = None
        self._subscribers: list[asyncio.Queue[ControllerEvent]] = []
        self._abandoned: set[asyncio.Future[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._scope_tasks: list[asyncio.Task[None]] = []
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
        self._previous_handlers: dict[signal.Signals, SignalHandler] = {}
        self._sigint_count = 0
        self.started_monotonic = 0.0

    @staticmethod
    def _make_reaper(settings: Settings) -> Reaper:
        return Reaper(
            cpus=settings.reaper.cpus,
            nice=settings.reaper.nice,
            queue_size=settings.reaper.queue_size,
            retries=settings.reaper.mrelease_retries,
            boost_on_esrch=settings.kill.boost_on_esrch,
        )

    # -- building -----------------------------------------------------------------------
    def _build_scopes(self, settings: Settings) -> list[ScopeRunner]:
        """Load every policy and prepare every scope; raises ConfigError before arming."""
        assert self._io is not None  # noqa: S101 - created in start() first
        self_cgroup = None
        with contextlib.suppress(OSError):
            self_cgroup = cgroupfs.own_cgroup("self", settings.daemon.proc_root)
        guard = Guard(
            settings.guard,
            self_cgroup=self_cgroup,
            proc_root=settings.daemon.proc_root,
            layout=self.layout,
            pacing=self.pacing,
            deaths=self.deaths,
        )
        actuator = Actuator(
            self.reaper,
            settings.kill,
            layout=self.layout,
            proc_root=settings.daemon.proc_root,
            pre_kill=self._pre_kill,
            deaths=self.deaths,
            io=self._io,
            protection=guard.process_protection,
        )
        runners = []
        for index, scope in enumerate(settings.scopes):
            if scope.cgroup is not None:
                if self.layout is None or self.layout.unified is None:
                    raise ConfigError(f"scopes.{index}.cgroup", "no cgroup2 hierarchy is mounted")
                directory = self.layout.v2_dir(scope.cgroup)
                if not directory.is_dir():
                    raise ConfigError(f"scopes.{index}.cgroup", f"{directory} does not exist")
            chain = PolicyChain.from_settings(
                scope.policies, f"scopes.{index}.policies", family=settings.kill.family
            )
            runners.append(
                ScopeRunner(
                    index,
                    scope,
                    chain=chain,
                    guard=guard,
                    actuator=actuator,
                    io_executor=self._io,
                    layout=self.layout,
                    proc_root=settings.daemon.proc_root,
                    dry_run=settings.daemon.dry_run,
                    emit_event=self._publish_event,
                    emit_kill=self._publish_kill,
                    recent_kills=self._recent_kills,
                    observer=self.metrics,
                )
            )
        return runners

    def _arm(self, runners: list[ScopeRunner]) -> None:
        loop = asyncio.get_running_loop()
        armed: list[ScopeRunner] = []
        try:
            for runner in runners:
                runner.arm(loop, privileged=self.privileged)
                armed.append(runner)
        except BaseException:
            for runner in armed:
                runner.disarm()
            raise

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Create threads, load policies, protect ourselves, arm triggers, start tasks.

        Everything that can fail because of the configuration fails here, before any trigger
        is armed.
        """
        if self._main is not None:
            raise RuntimeError("controller already started")
        settings = self.settings
        self.started_monotonic = time.monotonic()
        proc_root = settings.daemon.proc_root
        self.layout = cgroupfs.discover_layout(proc_root)
        self.privileged = psi.may_use_fast_windows(proc_root)
        before, after = raise_fd_limit()
        log.info("self.fd_limit", soft_before=before, soft_after=after)
        # Threads first: creating one under memory pressure is what we must never need to do.
        self._io = ThreadPoolExecutor(settings.daemon.io_threads, thread_name_prefix="pressured-io")
        # The pool only starts a thread when none is idle: hold every task at a barrier so
        # all io_threads exist now, not on the first busy moment.
        barrier = threading.Barrier(settings.daemon.io_threads)
        warmers = [self._io.submit(barrier.wait, 10) for _ in range(settings.daemon.io_threads)]
        for future in warmers:
            future.result()
        try:
            self.scopes = self._build_scopes(settings)
            self.reaper_info = self.reaper.start()
            log.info(
                "reaper.started",
                thread=self.reaper_info.native_id,
                cpus=sorted(self.reaper_info.cpus),
                nice=self.reaper_info.nice,
            )
            if self._protect_self:
                self._protect(settings)
            self._arm(self.scopes)
            self._start_watchdog(settings)
        except BaseException:
            for runner in self.scopes:
                runner.disarm()
            await self._release_threads()
            raise
        self._main = asyncio.create_task(self._run(), name="pressured-controller")
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({ready, self._main}, return_when=asyncio.FIRST_COMPLETED)
        if self._main in done:
            ready.cancel()
            await self._main  # re-raise the crash
        since_exec_s = seconds_since_exec()
        log.info(
            "controller.ready",
            since_exec_ms=None if since_exec_s is None else round(since_exec_s * 1000, 1),
            scopes=[runner.name for runner in self.scopes],
            privileged_triggers=self.privileged,
            dry_run=settings.daemon.dry_run,
            layout=str(self.layout.mode),
        )

    def _start_watchdog(self, settings: Settings) -> None:
        if not settings.watchdog.enabled:
            return
        proc_root = settings.daemon.proc_root
        watched = [
            w
            for scope in settings.scopes
            if (w := watched_scope(scope, self.layout, proc_root)) is not None
        ]
        self_cgroup = None
        with contextlib.suppress(OSError):
            self_cgroup = cgroupfs.own_cgroup("self", proc_root)
        self.watchdog = Watchdog(
            asyncio.get_running_loop(),
            watched,
            stall_limit_s=settings.watchdog.stall_limit_ms / 1000,
            guard_settings=settings.guard,
            self_cgroup=self_cgroup,
            layout=self.layout,
            proc_root=proc_root,
            privileged=self.privileged,
            dry_run=settings.daemon.dry_run,
            pacing=self.pacing,
            deaths=self.deaths,
            publish=self._publish_kill,
        )
        self.watchdog.start()
        log.info(
            "watchdog.started",
            scopes=[w.name for w in watched],
            stall_limit_ms=settings.watchdog.stall_limit_ms,
        )

    def _stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None

    def _protect(self, settings: Settings) -> None:
        if settings.daemon.oom_score_adj is not None:
            try:
                before, after = protect_from_oom(
                    settings.daemon.oom_score_adj, settings.daemon.proc_root
                )
                log.info("self.oom_score_adj", before=before, after=after)
            except OSError as exc:
                log.warning("self.oom_score_adj_failed", error=exc.strerror)
        if settings.daemon.mlockall:
            outcome = lock_memory()
            if outcome.locked:
                log.info("self.mlockall", flags=outcome.flags)
            else:
                log.warning(
                    "self.mlockall_failed",
                    error=outcome.error,
                    detail="needs CAP_IPC_LOCK or a higher RLIMIT_MEMLOCK",
                )

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                if self._handle_signals:
                    self._install_signals()
                    self._supervised(tg, "signals", self._signal_receiver)
                self._start_scope_tasks(tg)
                self._ready.set()
                await self._stopping.wait()
                # Stop the long-lived tasks; the shutdown recipe runs in stop().
                for task in self._scope_tasks:
                    task.cancel()
                raise _Stop
        except* _Stop:
            pass
        finally:
            # The signal handlers stay installed through the whole shutdown recipe: stop()
            # removes them last (a signal in between must not meet the default action).
            self._tg = None

    def _supervised(
        self, tg: asyncio.TaskGroup, name: str, start: Callable[[], Awaitable[None]]
    ) -> asyncio.Task[None]:
        """Start a long-lived task in the root group under a supervisor: its failure is logged
        and it is restarted, never ending the group (and with it the controller)."""
        record = self.tasks[name] = supervision.TaskRecord(name)
        return tg.create_task(
            supervision.supervise(name, start, backoff=self._backoff, record=record),
            name=name,
        )

    def spawn(self, name: str, start: Callable[[], Awaitable[None]]) -> None:
        """Run a long-lived task of the caller's (the daemon's sd_notify ping, say) in the
        controller's root task group, supervised like the controller's own: a failure is
        logged and the task restarted, and it ends when the controller stops."""
        if self._tg is None:
            raise RuntimeError("the controller is not running: start() it first")
        self._supervised(self._tg, name, start)

    def _start_scope_tasks(self, tg: asyncio.TaskGroup) -> None:
        self._scope_tasks = [
            self._supervised(tg, name, start)
            for runner in self.scopes
            for name, start in runner.background().items()
        ]

    async def serve(self) -> None:
        """Start (if needed) and run until stopped by ``stop()`` or a signal."""
        if self._main is None:
            await self.start()
        assert self._main is not None  # noqa: S101 - set by start()
        try:
            await asyncio.shield(self._main)
        finally:
            await self.stop()

    async def stop(self) -> None:
        """The shutdown recipe, in order, each step time-limited."""
        if self._main is None:
            return
        main, self._main = self._main, None
        log.info("controller.stopping")
        if self._on_stop is not None:
            self._on_stop()
        # 1. Disarm triggers (and the watchdog's): no new events from the kernel.
        for runner in self.scopes:
            runner.disarm()
        self._stop_watchdog()
        # 2. Stop deciding: cancel the scope tasks and the root group (in-flight kills finish
        #    on the reaper thread; we only stop waiting for them).
        self._stopping.set()
        timeout = self.settings.daemon.shutdown_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout):
                await main
        except TimeoutError:
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await main
        except Exception as exc:
            log.error("controller.crashed", error=repr(exc))
        await self.deaths.aclose()
        # 3. Close policies and sinks.
        for runner in self.scopes:
            await runner.aclose()
        for sink in self._sinks:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SINK_TIMEOUT_S):
                    await sink.aclose()
        for task in self._abandoned:  # sink calls left behind at their time limit
            task.cancel()
        # 4. Stop threads (the reaper finishes any job it is in: a kill is never half-done).
        await self._release_threads()
        log.info("controller.stopped")
        # 5. Give the signals back to whoever had them before us.
        self._remove_signals()

    async def _release_threads(self) -> None:
        if self._own_reaper:
            # Never waits: a reaper thread stuck in the kernel must not hold up the exit.
            self.reaper.close(wait=False)
        if self._io is not None:
            io, self._io = self._io, None
            io.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> Controller:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- operations attached after arming (the daemon arms first) ------------------------
    def add_sink(self, sink: Sink) -> None:
        """Feed ``sink`` too from now on; it is closed by :meth:`stop` like the others."""
        self._sinks.append(sink)

    def attach_metrics(self, metrics: Metrics) -> None:
        """Record decision timings in ``metrics`` from now on (also after a reload)."""
        self.metrics = metrics
        for runner in self.scopes:
            runner.observer = metrics

    # -- signals --------------------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            self._previous_handlers[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, self._on_signal, sig)
        # A signal that came before these handlers existed and was kept for us (a stop signal
        # lost on its way, a SIGHUP: see pressured.cli.startsignals) is acted on now.
        for sig in self._early_signals() if self._early_signals is not None else ():
            log.info("signal.deferred", signal=sig.name, detail="arrived during start-up")
            self._on_signal(sig)

    def _remove_signals(self) -> None:
        """Uninstall our handlers and put back the Python handlers found at install time.

        asyncio (and uvloop) reset a removed handler to the default action, under which a
        SIGTERM kills the process on the spot: an embedder gets its own handler back instead,
        and ``pressured run`` its start-up handlers, which still stop it cleanly."""
        if not self._previous_handlers:
            return
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            for sig, previous in self._previous_handlers.items():
                loop.remove_signal_handler(sig)
                if previous is not None and not _is_loop_handler(previous):
                    signal.signal(sig, previous)
        self._previous_handlers.clear()

    def _on_signal(self, sig: signal.Signals) -> None:
        """The loop's handler. Running, it queues the signal for the receiver task; once
        stopping (the receiver may be gone by then) it answers at once: the stop under way is
        already the graceful one, so a repeated SIGTERM or a SIGHUP is logged and ignored (a
        supervisor escalates with SIGKILL, never with a second SIGTERM, and the recipe has its
        own time limits), while a second SIGINT, Ctrl-C pressed again, forces the exit."""
        if not self._stopping.is_set():
            self._signals.put_nowait(sig)
            return
        log.info("signal.received", signal=sig.name, detail="already stopping")
        if sig == signal.SIGINT:
            self._count_sigint()

    def _count_sigint(self) -> None:
        self._sigint_count += 1
        if self._sigint_count >= 2:
            log.warning("controller.forced_exit", detail="second SIGINT")
            os._exit(130)

    async def _signal_receiver(self) -> None:
        while True:
            sig = await self._signals.get()
            log.info("signal.received", signal=sig.name)
            if sig == signal.SIGHUP:
                await self.reload()
                continue
            if sig == signal.SIGINT:
                self._count_sigint()
            self._stopping.set()

    # -- reload ---------------------------------------------------------------------------
    async def reload(self) -> bool:
        """Re-read the configuration; on any error keep running the current one."""
        if self._reload_source is None:
            log.warning("config.reload_skipped", detail="no configuration source to re-read")
            return False
        try:
            source = self._reload_source()
            # A daemon re-reads its file off the loop (aiofiles on its own I/O thread).
            new = await source if inspect.isawaitable(source) else source
            runners = self._build_scopes(new)
            for runner in self.scopes:
                runner.disarm()
            try:
                self._arm(runners)
            except BaseException:
                self._arm(self.scopes)  # put the old triggers back
                raise
        except Exception as exc:
            # A plugin's constructor may raise anything; none of it may end the daemon.
            error = str(exc) if isinstance(exc, PressuredError | OSError) else repr(exc)
            log.error("config.reload_failed", error=error, detail="kept the running config")
            return False
        old_tasks, old_runners = self._scope_tasks, self.scopes
        for task in old_tasks:
            task.cancel()
        for task in old_tasks:
            # Supervised tasks end only by cancellation; anything else they raised was
            # already logged by their supervisor and must not end the reload.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for name in [name for name in self.tasks if name != "signals"]:
            del self.tasks[name]
        for runner in old_runners:
            await runner.aclose()  # a replaced scope keeps no fd, thread or task
        self.settings = new
        self.scopes = runners
        self._stop_watchdog()
        self._start_watchdog(new)
        if self._tg is not None:
            self._start_scope_tasks(self._tg)
        log.info("config.reloaded", scopes=[runner.name for runner in runners])
        if self._after_reload is not None:
            await self._after_reload()
        return True

    # -- events out -----------------------------------------------------------------------
    def _kill_settled(self, final: KillRecord) -> None:
        """A dying victim's exit was confirmed (or given up on) in the background: /status
        shows how its kill ended."""
        for index, record in enumerate(self.recent):
            if (record.wall_time, record.target) == (final.wall_time, final.target):
                self.recent[index] = final

    def _recent_kills(self) -> tuple[RecentKill, ...]:
        return tuple(
            RecentKill(r.target, r.pid, r.cgroup, r.wall_time, r.policy) for r in self.recent
        )

    def _fan_out(self, item: ControllerEvent) -> None:
        for queue in self._subscribers:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()  # a slow subscriber loses its oldest item, not us
            queue.put_nowait(item)

    async def _call_sinks(self, method: str, item: ControllerEvent) -> None:
        for sink in self._sinks:
            error = await self._call_sink(getattr(sink, method), item)
            if error is not None:
                log.warning("sink.failed", sink=type(sink).__name__, error=error)

    async def _call_sink(
        self, call: Callable[[Any], Awaitable[None]], item: ControllerEvent
    ) -> str | None:
        """Run one sink call in its own task, time-limited; what went wrong, or None.

        Its own task, so that a sink which swallows cancellation cannot hold the scope (and
        its decision path) past the limit: on timeout the task is cancelled and left behind,
        referenced until it ends, as the policy chain does with a stuck policy.
        """
        try:
            task = asyncio.ensure_future(call(item))
        except Exception as exc:
            return repr(exc)
        try:
            done, _ = await asyncio.wait({task}, timeout=SINK_TIMEOUT_S)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
            return f"no answer in {SINK_TIMEOUT_S:g} s"
        if task.cancelled():
            return "cancelled itself"
        failure = task.exception()
        return None if failure is None else repr(failure)

    async def _publish_event(self, event: PressureEvent, deferred: str | None = None) -> None:
        # A deferred event (kill in flight, cooldown, rate limit) is logged at debug level: in
        # a burst of triggers one line per event would flood the log and tell nothing new.
        emit = log.debug if deferred else log.info
        emit(
            "pressure.event",
            scope=event.scope,
            level=event.level,
            source=str(event.source),
            trigger=str(event.trigger) if event.trigger else None,
            episode=event.episode,
            deferred=deferred,
            **event.detail,
        )
        self._fan_out(event)
        await self._call_sinks("on_pressure", event)

    async def _publish_kill(self, record: KillRecord) -> None:
        self.recent.append(record)
        name = "victim.would_kill" if record.result is KillResult.DRY_RUN else "victim.killed"
        if record.result not in (KillResult.KILLED, KillResult.DRY_RUN):
            name = f"victim.{record.result}"
        log.warning(name, **record.to_dict())
        self._fan_out(record)
        await self._call_sinks("on_kill", record)

    async def events(self) -> AsyncIterator[ControllerEvent]:
        """Stream pressure events and kill records as they happen (library users)."""
        queue: asyncio.Queue[ControllerEvent] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    # -- status ---------------------------------------------------------------------------
    def armed_triggers(self) -> dict[str, tuple[ArmedTrigger, ...]]:
        return {r.name: (r.triggers.armed if r.triggers else ()) for r in self.scopes}

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_monotonic, 3),
            "dry_run": self.settings.daemon.dry_run,
            "privileged_triggers": self.privileged,
            "layout": str(self.layout.mode) if self.layout else None,
            "reaper": {
                "thread": self.reaper_info.native_id if self.reaper_info else None,
                "cpus": sorted(self.reaper_info.cpus) if self.reaper_info else [],
                "pending": self.reaper.pending,
                "restarts": self.reaper.restarts,
            },
            "scopes": [
                {
                    "name": r.name,
                    "triggers": [t.describe() for t in (r.triggers.armed if r.triggers else ())],
                    "policies": [link.name for link in r.chain.links],
                    "disabled_policies": [link.name for link in r.chain.links if link.disabled],
                    "events": r.stats.events,
                    "dropped_events": r.stats.dropped_events,
                    "kills": r.stats.kills,
                    "waiting_for_group": r.waiting_for_group,
                    "gone": r.stats.gone,
                    "decision_running_s": (
                        round(time.monotonic() - r.decision_started, 3)
                        if r.decision_started is not None
                        else None
                    ),
                }
                for r in self.scopes
            ],
            "tasks": {
                name: {"starts": t.starts, "crashes": t.crashes, "last_error": t.last_error}
                for name, t in self.tasks.items()
            },
            "last_kills": [record.to_dict() for record in list(self.recent)[-10:]],
        }

    def stuck_decisions(self) -> list[str]:
        """One line per scope whose decision (scan, then policies) has run past its limit."""
        now = time.monotonic()
        return [
            reason
            for runner in self.scopes
            if (reason := runner.stuck_decision(now, self._decision_margin_s)) is not None
        ]

    async def health(self) -> tuple[bool, str]:
        """Healthy when the loop answers (we are running on it), no scope's decision path is
        stuck, and the reaper thread answers."""
        if self._main is None or self._main.done():
            return False, "controller not running"
        stuck = self.stuck_decisions()
        if stuck:
            return False, "; ".join(stuck)
        if not await self.reaper.ping(1.0):
            return False, "reaper thread does not answer"
        return True, "ok"


class _Stop(Exception):
    """Raised inside the root task group to end it after a requested stop."""


def _is_loop_handler(handler: SignalHandler) -> bool:
    """Whether ``handler`` is an event loop's placeholder: asyncio and uvloop install a Python
    handler of their own and keep the real one in the loop, where ours replaced it. Put back
    without its entry in the loop, it would drop the signal silently, worse than the default
    action the loop leaves."""
    module = getattr(handler, "__module__", None) or ""
    return module.partition(".")[0] in ("asyncio", "uvloop")
