"""GroupReturn: arm again once a removed directory is back; a failing arm is retried on a
doubling timer, never in a spin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from pressured.monitors.presence import GroupReturn

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]


async def back_after_one_failure(directory: Path) -> tuple[int, bool]:
    calls = 0
    armed = asyncio.Event()

    def arm() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(24, "Too many open files")
        armed.set()

    waiting = GroupReturn(asyncio.get_running_loop(), directory, arm, scope="/x")
    waiting.start()
    try:
        await asyncio.sleep(0.05)
        assert calls == 0 and waiting.waiting  # nothing happens while the group is gone
        directory.mkdir()  # noqa: ASYNC240 - an instant mkdir is the event under test
        await asyncio.wait_for(armed.wait(), 10)
        return calls, waiting.done
    finally:
        waiting.close()


def test_group_back_with_a_failing_first_arm_is_retried_once_later(
    run_async: RunAsync, tmp_path: Path
) -> None:
    """mkdir wakes the waiter; the first arm fails (logged with its retry delay), the timer
    retries once and the second arm succeeds: two calls in all."""
    with capture_logs() as logs:
        calls, done = run_async(back_after_one_failure(tmp_path / "group"))
    assert calls == 2 and done
    failed = [line for line in logs if line["event"] == "scope.rearm_failed"]
    assert len(failed) == 1 and failed[0]["retry_in_s"] == 1.0
