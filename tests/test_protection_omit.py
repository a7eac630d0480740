"""systemd's ManagedOOMPreference=omit (``user.oomd_omit`` on a unit's cgroup) is protection:
no policy of the chain may take a process in such a group, at any depth below it."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pressured.config import Settings
from pressured.controller import Controller, ControllerEvent
from pressured.events import EventSource, KillRecord, PressureEvent
from pressured.kernel.cgroupfs import Cgroup
from pressured.testing.scratch import ScratchGroup

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
pytestmark = [pytest.mark.kernel]


def mark_omitted(group: Cgroup) -> None:
    try:
        os.setxattr(group.directory, "user.oomd_omit", b"1")
    except OSError as exc:
        pytest.skip(f"this kernel refuses user xattrs on cgroupfs: {exc}")


async def offer_one_event(scratch: ScratchGroup, seconds: float) -> list[ControllerEvent]:
    """The default chain, one manual event, and what the controller streams for a while."""
    settings = Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": False},
            "scopes": [
                {"cgroup": scratch.path, "memcg_v1": scratch.memcg_path, "starvation_check_s": 0}
            ],
        }
    )
    items: list[ControllerEvent] = []
    async with Controller(settings) as controller:

        async def gather() -> None:
            async for item in controller.events():
                items.append(item)

        task = asyncio.create_task(gather())
        await asyncio.sleep(0)
        controller.scopes[0]._offer(
            PressureEvent(scope=scratch.path, level="some", source=EventSource.MANUAL)
        )
        await asyncio.sleep(seconds)
        task.cancel()
    return items


@pytest.mark.parametrize("depth", ["in the marked group", "in a group below it"])
def test_no_policy_kills_a_process_in_an_omitted_group(
    run_async: RunAsync, scratch: ScratchGroup, depth: str
) -> None:
    """The only process in scope sits in a group marked omit: culprit leaves it out, and so
    must the fallback policy behind it (oom_score took it before), and the mark counts for
    groups below the marked one too (a service's own subgroups)."""
    unit = scratch.child("app.service")
    mark_omitted(unit)
    home = unit if depth == "in the marked group" else scratch.child("app.service/worker")
    hog: subprocess.Popen[bytes] = scratch.spawn_workload("hog", "24", group=home)

    items = run_async(offer_one_event(scratch, 1.5))
    assert [item for item in items if isinstance(item, KillRecord)] == []
    assert hog.poll() is None
