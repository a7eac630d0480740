"""The one place an event loop is created. Embedders bring their own loop instead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from pressured.config import LoopName

T = TypeVar("T")


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": _uvloop_factory,
    "asyncio": asyncio.new_event_loop,
}


def run_on(loop_name: LoopName, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new loop of the named kind."""
    with asyncio.Runner(loop_factory=LOOP_FACTORIES[loop_name]) as runner:
        return runner.run(main)
