"""``pressured.run``: the daemon's entry point, and the only place a loop is created."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from pressured.config import Settings
from pressured.controller import Controller
from pressured.loops import run_on

log = structlog.get_logger("pressured.daemon")


async def serve(settings: Settings, *, reload: Callable[[], Settings] | None = None) -> None:
    """Run the controller with signal handling and self-protection until a signal stops it."""
    controller = Controller(settings, reload=reload, handle_signals=True, protect_self=True)
    await controller.serve()


def run(settings: Settings | None = None, *, reload: Callable[[], Settings] | None = None) -> None:
    """Create the configured loop (uvloop by default) and serve until SIGTERM/SIGINT."""
    settings = settings or Settings()
    run_on(settings.daemon.loop, serve(settings, reload=reload))
