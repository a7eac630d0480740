"""An embedded Controller with ``handle_signals=True`` gives the signals back as it found them.

asyncio and uvloop reset a removed handler to the default action; the old code left it there,
so an application that had its own SIGTERM handler before the controller found SIGTERM
killing the process once the controller had stopped.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any

import pytest

import pressured
from pressured.config import Settings
from pressured.testing.scratch import ScratchGroup

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@pytest.fixture
def own_handlers() -> Iterator[None]:
    """Whatever the test sets for the signals the controller handles is undone after it."""
    saved = {sig: signal.getsignal(sig) for sig in HANDLED}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _settings(scratch: ScratchGroup) -> Settings:
    return Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "scopes": [{"cgroup": scratch.path, "memcg_v1": scratch.memcg_path}],
        }
    )


def _application_handler(_signum: int, _frame: FrameType | None) -> None:
    """Stands for an application's own SIGTERM handler."""


@pytest.mark.kernel
@pytest.mark.usefixtures("own_handlers")
def test_stopped_controller_gives_an_applications_own_handler_back(
    run_async: RunAsync, scratch: ScratchGroup
) -> None:
    """After stop(), SIGTERM goes to the handler the application had before, not to the
    default action that kills the process."""
    signal.signal(signal.SIGTERM, _application_handler)

    async def app() -> object:
        async with pressured.Controller(_settings(scratch), handle_signals=True):
            during = signal.getsignal(signal.SIGTERM)
        assert during is not _application_handler  # the controller had it meanwhile
        return signal.getsignal(signal.SIGTERM)

    assert run_async(app()) is _application_handler


@pytest.mark.kernel
@pytest.mark.usefixtures("own_handlers")
def test_stopped_controller_does_not_leave_a_dead_loop_placeholder(
    run_async: RunAsync, scratch: ScratchGroup
) -> None:
    """An application whose *loop* handled SIGTERM before the controller replaced it gets the
    default action back, not the loop's placeholder, which without its loop entry would drop
    every SIGTERM silently."""

    async def app() -> object:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: None)
        async with pressured.Controller(_settings(scratch), handle_signals=True):
            pass
        return signal.getsignal(signal.SIGTERM)

    assert run_async(app()) == signal.SIG_DFL
