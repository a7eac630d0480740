"""A watched cgroup that goes away and comes back: after ``rmdir`` its triggers report
EPOLLPRI|EPOLLERR on every poll, forever. The scope and the watchdog notice, close them
without spinning, log it, and arm again by themselves (inotify, no polling) when the group is
created again; a real pressure event is then handled."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from structlog.testing import capture_logs

from pressured.config import GuardSettings, ScopeSettings, Settings
from pressured.controller import Controller
from pressured.events import EventSource, KillRecord, PressureEvent
from pressured.kernel.cgroupfs import Cgroup
from pressured.testing.scratch import ScratchGroup
from pressured.watchdog import Watchdog, watched_scope

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
pytestmark = [pytest.mark.kernel, pytest.mark.pressure]

WATCHED = "watched"
QUIET_S = 1.0
"""How long the removed group is watched for a flood (the old code fired thousands of times
in this period)."""


def remove_child(scratch: ScratchGroup, child: Cgroup) -> None:
    os.rmdir(child.directory)
    if scratch.memcg_dir is not None:
        os.rmdir(scratch.memcg_dir / WATCHED)


async def until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        # State changed by the controller's callbacks or the watchdog thread: nothing to
        # await from outside.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def scope_gone_and_back(
    scratch: ScratchGroup, thrash_file: str
) -> tuple[dict[str, int], list[PressureEvent], KillRecord, int]:
    child = scratch.child(WATCHED)
    settings = Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": False},
            "guard": {"cooldown_ms": 0},
            "scopes": [
                {
                    "cgroup": child.path,
                    "memcg_v1": child.memcg_v1_path,
                    "starvation_check_s": 0,
                    "levels": [
                        {"name": "some", "kind": "some", "threshold_ms": 70, "window_ms": 1000}
                    ],
                }
            ],
        }
    )
    async with Controller(settings) as controller:
        runner = controller.scopes[0]
        seen: list[PressureEvent | KillRecord] = []

        async def gather() -> None:
            async for item in controller.events():
                seen.append(item)

        collecting = asyncio.create_task(gather())
        remove_child(scratch, child)
        await until(lambda: runner.stats.gone == 1)
        fired, events = sum(runner.stats.fired.values()), runner.stats.events
        await asyncio.sleep(QUIET_S)  # the measured period: no event may come in it
        while_gone = {
            "fired": sum(runner.stats.fired.values()) - fired,
            "events": runner.stats.events - events,
            "dropped": runner.stats.dropped_events,
        }
        back = scratch.child(WATCHED, limit_bytes=64 << 20)
        await until(lambda: runner.stats.rearmed == 1 and runner.triggers is not None)
        thrasher = scratch.spawn_workload("thrash", thrash_file, group=back)
        await until(
            lambda: any(isinstance(i, KillRecord) and i.pid == thrasher.pid for i in seen), 40
        )
        collecting.cancel()
        kill = next(i for i in seen if isinstance(i, KillRecord))
        pressure = [i for i in seen if isinstance(i, PressureEvent)]
        returncode = thrasher.wait(10)
        return while_gone, pressure, kill, returncode


def test_removed_group_is_not_a_flood_and_its_triggers_come_back_with_it(
    run_async: RunAsync, scratch: ScratchGroup, thrash_file: str
) -> None:
    """rmdir: 'scope.gone', no trigger callback and no event for a second; mkdir again:
    'scope.back', and a real PSI event there kills the thrasher."""
    with capture_logs() as logs:
        outcome = run_async(scope_gone_and_back(scratch, thrash_file))
    while_gone, pressure, kill, returncode = outcome
    assert while_gone == {"fired": 0, "events": 0, "dropped": 0}
    names = [line["event"] for line in logs]
    assert names.count("scope.gone") == 1
    assert "scope.back" in names and names.index("scope.gone") < names.index("scope.back")
    assert pressure and pressure[0].source is EventSource.PSI
    assert kill.result.value == "killed"
    assert returncode == -signal.SIGKILL


async def watchdog_gone_and_back(scratch: ScratchGroup, thrash_file: str) -> tuple[int, int]:
    child = scratch.child(WATCHED)
    scope = ScopeSettings.model_validate(
        {
            "cgroup": child.path,
            "memcg_v1": child.memcg_v1_path,
            "levels": [{"name": "some", "kind": "some", "threshold_ms": 70, "window_ms": 1000}],
        }
    )
    watched = watched_scope(scope, scratch.layout, "/proc")
    assert watched is not None
    watchdog = Watchdog(
        asyncio.get_running_loop(),
        [watched],
        stall_limit_s=1.0,
        guard_settings=GuardSettings(),
        self_cgroup=None,
        layout=scratch.layout,
        proc_root="/proc",
        privileged=False,
        dry_run=True,
    )
    watchdog.start()
    try:
        remove_child(scratch, child)
        await asyncio.sleep(QUIET_S)  # the measured period: no check may run in it
        checks_while_gone = watchdog.checks
        back = scratch.child(WATCHED, limit_bytes=64 << 20)
        thrasher = scratch.spawn_workload("thrash", thrash_file, group=back)
        await until(lambda: watchdog.checks >= 1, 40)
        thrasher.kill()
        thrasher.wait(10)
        return checks_while_gone, watchdog.checks
    finally:
        watchdog.stop()


def test_watchdog_does_not_spin_on_a_removed_group_and_rearms_when_it_returns(
    run_async: RunAsync, scratch: ScratchGroup, thrash_file: str
) -> None:
    """rmdir: the watchdog thread logs 'watchdog.scope_gone' and runs no check (it used to
    spin on POLLERR); mkdir again: 'watchdog.rearmed' and a real trigger event is checked."""
    with capture_logs() as logs:
        checks_while_gone, checks_after = run_async(watchdog_gone_and_back(scratch, thrash_file))
    names = [line["event"] for line in logs]
    assert checks_while_gone == 0
    assert names.count("watchdog.scope_gone") == 1
    assert "watchdog.rearmed" in names
    assert checks_after >= 1
