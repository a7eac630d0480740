"""pressured.watch against real PSI triggers, on both loops."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pressured.errors import ConfigError
from pressured.events import EventSource, PressureEvent
from pressured.testing.scratch import ScratchGroup
from pressured.watch import parse_trigger_text, systemd_trigger, watch

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.kernel
@pytest.mark.pressure
def test_watch_yields_an_event_under_real_pressure(
    run_async: RunAsync, scratch: ScratchGroup, thrash_file: str
) -> None:
    """A page-cache thrash in the watched group produces a PSI event from watch()."""
    scratch.set_limit(32 << 20)

    async def first_event() -> PressureEvent:
        async with watch(scratch.path) as events:
            scratch.spawn_workload("thrash", thrash_file)
            async with asyncio.timeout(30):
                return await anext(events)

    event = run_async(first_event())
    assert event.scope == scratch.path
    assert event.source is EventSource.PSI
    # In a lone thrasher's group every stall is a full stall too: either level may come first.
    assert event.level in ("some", "full")
    assert event.trigger is not None and event.trigger.kind == event.level
    assert event.trigger.window_us % 2_000_000 == 0


@pytest.mark.kernel
def test_leaving_or_cancelling_watch_closes_every_fd(
    run_async: RunAsync, scratch: ScratchGroup
) -> None:
    """Leaving the block, and cancelling a task blocked in it, leave no fd open."""
    before = open_fds()

    async def leave() -> int:
        async with watch(scratch.path) as events:
            return len(events.fds())

    assert run_async(leave()) == 4  # two levels, each a trigger fd and an inner epoll
    assert open_fds() == before

    async def cancel() -> None:
        async def consume() -> None:
            async for _ in watch(scratch.path):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_async(cancel())
    assert open_fds() == before


@pytest.mark.kernel
def test_idle_watch_wakes_nobody(run_async: RunAsync, scratch: ScratchGroup) -> None:
    """No pressure, no events and (almost) no context switches of the loop thread."""
    import threading

    tid = threading.get_native_id()

    def switches() -> int:
        with open(f"/proc/self/task/{tid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("voluntary_ctxt_switches"):
                    return int(line.split()[1])
        raise AssertionError("no voluntary_ctxt_switches line")

    async def idle() -> tuple[int, int]:
        async with watch(scratch.path) as events:
            before = switches()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(3):
                    await anext(events)
            return switches() - before, events.dropped

    woken, dropped = run_async(idle())
    # A PSI fd handed to add_reader directly would spin the loop thousands of times here.
    assert woken < 20
    assert dropped == 0


@pytest.mark.kernel
def test_systemd_handed_trigger_is_used(run_async: RunAsync, scratch: ScratchGroup) -> None:
    """$MEMORY_PRESSURE_WATCH/WRITE select the file and trigger when no target is given."""
    path = str(scratch.group.pressure_path())
    environ = {
        "MEMORY_PRESSURE_WATCH": path,
        "MEMORY_PRESSURE_WRITE": base64.b64encode(b"some 200000 2000000").decode(),
    }

    async def arm() -> tuple[str, int]:
        async with watch(environ=environ) as events:
            (armed,) = events.armed
            return armed.path, armed.effective.threshold_us

    assert run_async(arm()) == (path, 200000)


def test_systemd_variables_parse_and_dev_null_disables() -> None:
    """systemd's '/dev/null' means no watch; garbage is a ConfigError naming the variable."""
    assert systemd_trigger({"MEMORY_PRESSURE_WATCH": "/dev/null"}) is None
    assert systemd_trigger({}) is None
    spec = parse_trigger_text("full 100000 2000000\0")
    assert (spec.kind, spec.threshold_us, spec.window_us) == ("full", 100000, 2000000)
    with pytest.raises(ConfigError, match="MEMORY_PRESSURE_WRITE"):
        parse_trigger_text("sometimes 1 2")
    with pytest.raises(ConfigError, match="base64"):
        systemd_trigger({"MEMORY_PRESSURE_WATCH": "/x", "MEMORY_PRESSURE_WRITE": "!!!"})
