"""``pressured.run``: the daemon. The only place a loop is created, and where the operations
pieces (metrics, HTTP endpoints, kill journal, hooks, systemd notifications) are put around the
controller. Library users who embed a :class:`~pressured.controller.Controller` choose their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

from pressured.config import Settings
from pressured.controller import Controller
from pressured.errors import ConfigError
from pressured.loops import run_on
from pressured.ops import Sink
from pressured.ops.hooks import HookRunner
from pressured.ops.http import OpsServer
from pressured.ops.journal import KillJournal
from pressured.ops.metrics import Metrics
from pressured.ops.sdnotify import Notifier, run_watchdog, watchdog_interval

log = structlog.get_logger("pressured.daemon")


class Daemon:
    """The controller plus everything an operator expects around it."""

    def __init__(self, settings: Settings, reload: Callable[[], Settings] | None = None):
        self.settings = settings
        # One owned thread for the journal's fsyncs and /metrics rendering: neither may block
        # the loop, and neither may create a thread when memory is short.
        self.io = ThreadPoolExecutor(1, thread_name_prefix="pressured-ops")
        self.metrics = Metrics(
            pressure_cache_s=settings.metrics.pressure_cache_s, loop_name=settings.daemon.loop
        )
        self.journal = (
            KillJournal(settings.journal.path, self.io, on_error=self.metrics.journal_failed)
            if settings.journal.path
            else None
        )
        self.hooks = HookRunner(settings.hooks, observer=self.metrics.observe_hook)
        self.notifier = Notifier.from_env(unset=True)
        sinks: list[Sink] = [self.metrics, self.hooks]
        if self.journal is not None:
            sinks.append(self.journal)
        self.controller = Controller(
            settings,
            reload=reload,
            handle_signals=True,
            protect_self=True,
            sinks=sinks,
            metrics=self.metrics,
            pre_kill=self.hooks.pre_kill if settings.hooks.pre_kill else None,
            after_reload=self._after_reload,
            on_stop=self.notifier.stopping,
        )
        self.server = (
            OpsServer(
                settings.metrics.host,
                settings.metrics.port,
                metrics=self.metrics,
                health=self.controller.health,
                status=self.controller.status,
                executor=self.io,
            )
            if settings.metrics.enabled
            else None
        )

    def _watch_scopes(self) -> None:
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
        ping: asyncio.Task[None] | None = None
        try:
            # Bind and open first: a busy port or an unwritable journal fails before anything
            # is armed, as a configuration error naming the field.
            if self.server is not None:
                try:
                    await self.server.start()
                except OSError as exc:
                    raise ConfigError(
                        "metrics.port",
                        f"cannot listen on {self.settings.metrics.host}:"
                        f"{self.settings.metrics.port}: {exc.strerror}",
                    ) from None
                log.info("ops.listening", url=self.server.url)
            if self.journal is not None:
                try:
                    await self.journal.start()
                except OSError as exc:
                    raise ConfigError("journal.path", f"cannot open: {exc.strerror}") from None
            await self.controller.start()
            self._watch_scopes()
            armed = sum(len(r.triggers.armed) for r in self.controller.scopes if r.triggers)
            self.notifier.ready(status=f"{armed} trigger(s) armed")
            interval = watchdog_interval()
            if interval is not None:
                ping = asyncio.create_task(
                    run_watchdog(self.notifier, interval, self.controller.health)
                )
            await self.controller.serve()
        finally:
            if ping is not None:
                ping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ping
            await self.controller.stop()
            if self.server is not None:
                await self.server.aclose()
            self.notifier.close()
            self.io.shutdown(wait=True)


async def serve(settings: Settings, *, reload: Callable[[], Settings] | None = None) -> None:
    """Run the daemon (controller, signals, self-protection, operations) until stopped."""
    await Daemon(settings, reload).serve()


def run(settings: Settings | None = None, *, reload: Callable[[], Settings] | None = None) -> None:
    """Create the configured loop (uvloop by default) and serve until SIGTERM/SIGINT."""
    settings = settings or Settings()
    run_on(settings.daemon.loop, serve(settings, reload=reload))
