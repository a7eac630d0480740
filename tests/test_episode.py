"""Episodes: after an event the scope re-evaluates from the refault rate, never from the watched
group's pressure file, and stops once the group is quiet."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pressured.config import Settings
from pressured.controller import Controller, ControllerEvent
from pressured.events import EventSource, KillRecord, PressureEvent
from pressured.testing.scratch import ScratchGroup

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
pytestmark = [pytest.mark.kernel, pytest.mark.pressure]


def settings_for(scratch: ScratchGroup) -> Settings:
    return Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": False},
            "guard": {"cooldown_ms": 0, "protect_cmdline": ["workloads sleep"]},
            "scopes": [
                {"cgroup": scratch.path, "memcg_v1": scratch.memcg_path, "starvation_check_s": 0}
            ],
        }
    )


async def collect(controller: Controller, until_s: float) -> list[ControllerEvent]:
    items: list[ControllerEvent] = []

    async def gather() -> None:
        async for item in controller.events():
            items.append(item)

    task = asyncio.create_task(gather())
    await asyncio.sleep(until_s)
    task.cancel()
    return items


async def one_episode(scratch: ScratchGroup, seconds: float) -> list[ControllerEvent]:
    """Start an episode with one manual event, as a trigger callback would, and record what
    the controller streams for ``seconds``."""
    async with Controller(settings_for(scratch)) as controller:
        collecting = asyncio.create_task(collect(controller, seconds))
        await asyncio.sleep(0)
        controller.scopes[0]._offer(
            PressureEvent(scope=scratch.path, level="some", source=EventSource.MANUAL)
        )
        return await collecting


def test_thrashing_continues_so_the_episode_rechecks_and_kills_again(
    run_async: RunAsync, scratch: ScratchGroup, thrash_file: str
) -> None:
    """Two thrashers: the first event kills one; the refault rate makes the episode kill the
    other within the same window, with no second trigger event needed."""
    thrashers = [scratch.spawn_workload("thrash", thrash_file) for _ in range(2)]

    items: list[ControllerEvent] = run_async(one_episode(scratch, 1.8))
    kills = [item for item in items if isinstance(item, KillRecord)]
    rechecks = [
        item
        for item in items
        if isinstance(item, PressureEvent) and item.source is EventSource.RECHECK
    ]
    assert {k.pid for k in kills} == {t.pid for t in thrashers}
    assert rechecks and rechecks[0].detail["refaults_per_s"] >= 1000
    assert all(t.wait(10) == -signal.SIGKILL for t in thrashers)


def test_quiet_group_ends_the_episode_without_another_kill(
    run_async: RunAsync, scratch: ScratchGroup, thrash_file: str
) -> None:
    """One thrasher killed, a quiet sleeper left: no recheck event, no second kill."""
    thrasher = scratch.spawn_workload("thrash", thrash_file)
    idle = scratch.spawn_workload("hog", "4")

    items: list[ControllerEvent] = run_async(one_episode(scratch, 2.5))
    kills = [item for item in items if isinstance(item, KillRecord)]
    assert [k.pid for k in kills] == [thrasher.pid]
    assert not any(isinstance(i, PressureEvent) and i.source is EventSource.RECHECK for i in items)
    assert idle.poll() is None


def test_recheck_with_nobody_faulting_kills_no_one(
    run_async: RunAsync, scratch: ScratchGroup
) -> None:
    """A recheck says "the scope still refaults"; when no live process in it faults, the
    refaults are not anyone's doing (seen in CI 1.2 s after a ``cgroup.kill``: the default
    chain fell back to size and took a sleeping 35 MiB bystander). Nobody dies."""
    hogs = [scratch.spawn_workload("hog", "20") for _ in range(2)]

    async def offer_recheck() -> list[ControllerEvent]:
        async with Controller(settings_for(scratch)) as controller:
            collecting = asyncio.create_task(collect(controller, 1.5))
            await asyncio.sleep(0)
            controller.scopes[0]._offer(
                PressureEvent(
                    scope=scratch.path,
                    level="some",
                    source=EventSource.RECHECK,
                    detail={"refaults_per_s": 5000.0},
                )
            )
            return await collecting

    items: list[ControllerEvent] = run_async(offer_recheck())
    assert [item for item in items if isinstance(item, KillRecord)] == []
    assert [hog.poll() for hog in hogs] == [None, None]
