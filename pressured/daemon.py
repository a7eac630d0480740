"""``pressured.run``: the daemon. The only place a loop is created, and where the operations
pieces (metrics, HTTP endpoints, kill journal, hooks, systemd notifications) are put around the
controller. Library users who embed a :class:`~pressured.controller.Controller` choose their own.

Start-up is part of reaction: a daemon restarted by systemd or the kubelet in the middle of a
memory crisis acts only once armed, and under pressure every module it imports is read back
from disk. So the order is: configuration, then the cheap checks that can still fail because of
it (:mod:`pressured.preflight`: bind the port, create the journal), then the controller armed
(triggers, reaper, I/O threads, the policies of every chain), and only then the operations
pieces that are enabled, imported at that moment (a feature that is off is never imported:
what an idle daemon has imported stays in its locked memory for good). Until they exist, a
:class:`~pressured.ops.backlog.Backlog` holds what the controller publishes.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING

import structlog

from pressured.config import Settings
from pressured.controller import SINK_TIMEOUT_S, Controller
from pressured.errors import ConfigError
from pressured.loops import run_on
from pressured.ops import Sink
from pressured.ops.backlog import Backlog
from pressured.ops.sdnotify import Notifier, run_watchdog, watchdog_interval
from pressured.preflight import check_journal_path, reserve_port

if TYPE_CHECKING:
    from pressured.ops.hooks import HookRunner
    from pressured.ops.http import OpsServer
    from pressured.ops.journal import KillJournal
    from pressured.ops.metrics import Metrics

log = structlog.get_logger("pressured.daemon")

ReloadFromFile = Callable[[Executor], Awaitable[Settings]]
"""How the daemon re-reads its configuration on SIGHUP: given the daemon's own I/O thread,
so the file is read there (aiofiles), never on the loop or on a thread made for it."""

EarlySignals = Callable[[], Sequence[signal.Signals]]
"""Signals that came before the controller's handlers and still need acting on (a stop lost on
its way, a SIGHUP; ``pressured run``'s start-up handlers keep them): acted on once the
controller's handlers exist."""


class Daemon:
    """The controller plus everything an operator expects around it."""

    def __init__(
        self,
        settings: Settings,
        reload: ReloadFromFile | None = None,
        early_signals: EarlySignals | None = None,
    ):
        self.settings = settings
        # One owned thread for the journal's fsyncs and /metrics rendering: neither may block
        # the loop, and neither may create a thread when memory is short.
        self.io = ThreadPoolExecutor(1, thread_name_prefix="pressured-ops")
        self.notifier = Notifier.from_env(unset=True)
        self.backlog = Backlog()
        self.metrics: Metrics | None = None
        self.journal: KillJournal | None = None
        self.server: OpsServer | None = None
        # Built before arming: a pre-kill hook sits on the kill path, and building the runner
        # checks every hook program, so a bad one is a config error before anything is armed
        # (not a daemon that arms and then exits). It only resolves paths: no process starts.
        self.hooks: HookRunner | None = None
        if settings.hooks.pre_kill or settings.hooks.post_kill:
            from pressured.ops.hooks import HookRunner

            self.hooks = HookRunner(settings.hooks, observer=self._observe_hook)
        self.controller = Controller(
            settings,
            reload=(lambda: reload(self.io)) if reload is not None else None,
            handle_signals=True,
            early_signals=early_signals,
            protect_self=True,
            sinks=[self.backlog],
            pre_kill=self.hooks.pre_kill if self.hooks is not None else None,
            after_reload=self._after_reload,
            on_stop=self.notifier.stopping,
        )

    def _observe_hook(self, stage: str, outcome: str, duration_s: float) -> None:
        if self.metrics is not None:
            self.metrics.observe_hook(stage, outcome, duration_s)

    def _preflight(self) -> socket.socket | None:
        """What can fail because of the operations settings, checked before anything is armed.
        Returns the bound listening socket for the HTTP server, if enabled."""
        if self.settings.journal.path:
            check_journal_path(self.settings.journal.path)
        if not self.settings.metrics.enabled:
            return None
        return reserve_port(self.settings.metrics.host, self.settings.metrics.port)

    async def _start_operations(self, listener: socket.socket | None) -> None:
        """Metrics, hooks, journal and HTTP: imported and started once the controller is armed.

        Only what is enabled is imported. With metrics off nothing can read them (no HTTP
        server either), and prometheus-client with the HTTP, e-mail and WSGI modules it pulls
        in would hold about 2.4 MiB of locked memory for the daemon's whole life.
        """
        settings = self.settings
        sinks: list[Sink] = []
        if settings.metrics.enabled:
            from pressured.ops.metrics import Metrics

            self.metrics = Metrics(
                pressure_cache_s=settings.metrics.pressure_cache_s, loop_name=settings.daemon.loop
            )
            sinks.append(self.metrics)
        metrics = self.metrics
        if self.hooks is not None:
            sinks.append(self.hooks)
        if settings.journal.path:
            from pressured.ops.journal import KillJournal

            self.journal = KillJournal(
                settings.journal.path,
                self.io,
                on_error=metrics.journal_failed if metrics is not None else None,
            )
            sinks.append(self.journal)
        await self.backlog.hand_over(sinks, SINK_TIMEOUT_S)
        # No await between the hand-over and here: nothing published falls in between.
        for sink in sinks:
            self.controller.add_sink(sink)
        if metrics is not None:
            self.controller.attach_metrics(metrics)
        self._watch_scopes()
        if self.journal is not None:
            try:
                await self.journal.start()
            except OSError as exc:
                raise ConfigError("journal.path", f"cannot open: {exc.strerror}") from None
        if listener is not None and metrics is not None:
            from pressured.ops.http import OpsServer

            self.server = OpsServer(
                settings.metrics.host,
                settings.metrics.port,
                metrics=metrics,
                health=self.controller.health,
                status=self.controller.status,
                executor=self.io,
            )
            try:
                await self.server.start(sock=listener)
            except OSError as exc:
                listener.close()
                raise ConfigError(
                    "metrics.port",
                    f"cannot serve on {settings.metrics.host}:{settings.metrics.port}: "
                    f"{exc.strerror}",
                ) from None
            log.info("ops.listening", url=self.server.url)

    def _watch_scopes(self) -> None:
        if self.metrics is None:
            return
        for runner in self.controller.scopes:
            armed = runner.triggers.armed if runner.triggers else ()
            self.metrics.set_triggers(runner.name, len(armed))
            self.metrics.watch_pressure(runner.name, runner.read_pressure)

    async def _after_reload(self) -> None:
        self.notifier.reloading()
        self._watch_scopes()
        if self.journal is not None:
            await self.journal.reopen()
        self.notifier.ready(status="configuration reloaded")

    async def serve(self) -> None:
        listener: socket.socket | None = None
        try:
            # 1. A busy port or an unwritable journal fails here, as a configuration error
            #    naming the field, before any trigger is armed.
            listener = self._preflight()
            # 2. Armed: from here on the daemon reacts.
            await self.controller.start()
            # 3. Everything that is not needed to act.
            await self._start_operations(listener)
            listener = None  # the server owns it now
            armed = sum(len(r.triggers.armed) for r in self.controller.scopes if r.triggers)
            self.notifier.ready(status=f"{armed} trigger(s) armed")
            interval = watchdog_interval()
            if interval is not None:
                # Supervised in the controller's task group: a failing ping is logged and
                # restarted, and it ends with the controller.
                notifier, health = self.notifier, self.controller.health
                self.controller.spawn("sdnotify", lambda: run_watchdog(notifier, interval, health))
            await self.controller.serve()
        finally:
            if listener is not None:
                listener.close()
            await self.controller.stop()
            if self.server is not None:
                await self.server.aclose()
            self.notifier.close()
            # The journal is closed by now; nothing queued on this thread is worth waiting for.
            self.io.shutdown(wait=False, cancel_futures=True)


async def serve(
    settings: Settings,
    *,
    reload: ReloadFromFile | None = None,
    early_signals: EarlySignals | None = None,
) -> None:
    """Run the daemon (controller, signals, self-protection, operations) until stopped."""
    await Daemon(settings, reload, early_signals).serve()


def run(
    settings: Settings | None = None,
    *,
    reload: ReloadFromFile | None = None,
    early_signals: EarlySignals | None = None,
) -> None:
    """Create the configured loop (uvloop by default) and serve until SIGTERM/SIGINT."""
    settings = settings or Settings()
    run_on(settings.daemon.loop, serve(settings, reload=reload, early_signals=early_signals))
