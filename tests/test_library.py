"""The library surface: kill_and_reap, the embedded Controller, and __all__."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import pressured
from pressured.config import Settings
from pressured.events import EventSource, KillRecord, KillResult, PressureEvent
from pressured.kernel import pidfd
from pressured.reaper import Reaper
from pressured.testing.scratch import ScratchGroup, wait_for_ready

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]


def hog(mib: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pressured.testing.workloads", "hog", str(mib)],
        stdout=subprocess.PIPE,
    )
    wait_for_ready(proc, 60)
    return proc


def test_all_matches_the_exports() -> None:
    """__all__ lists exactly the public names, and each one resolves."""
    from pressured import _EXPORTS

    assert sorted(pressured.__all__) == sorted([*_EXPORTS, "__version__"])
    for name in pressured.__all__:
        assert getattr(pressured, name) is not None


@pytest.mark.kernel
def test_kill_and_reap_a_256_mib_child(run_async: RunAsync) -> None:
    """The record of a real kill has sane figures: size, result, mrelease, ordered timings."""
    child = hog(256)
    record: KillRecord = run_async(pressured.kill_and_reap(child.pid))
    assert record.result is KillResult.KILLED
    assert record.rss_before_bytes >= 256 << 20
    assert record.mrelease is not None
    assert str(record.mrelease.status) in ("reaped", "gone")
    assert record.signal_to_exit_ms is not None and record.signal_to_exit_ms >= 0
    if record.signal_to_reaped_ms is not None:
        assert record.signal_to_reaped_ms >= 0
    assert child.wait(10) == -signal.SIGKILL


@pytest.mark.kernel
def test_kill_and_reap_by_pidfd_with_a_shared_reaper(run_async: RunAsync) -> None:
    """An application's own pidfd and long-lived Reaper work the same way."""
    child = hog(32)
    fd = pidfd.open_pidfd(child.pid)
    with Reaper() as reaper:
        record = run_async(pressured.kill_and_reap(pidfd=fd, reaper=reaper))
        assert reaper.jobs_done >= 1
    assert record.pid == child.pid and record.result is KillResult.KILLED
    assert pidfd.has_exited(fd)
    child.wait(10)


def test_kill_and_reap_needs_exactly_one_target(run_async: RunAsync) -> None:
    """Neither or both of pid/pidfd is a usage error."""
    with pytest.raises(ValueError, match="exactly one"):
        run_async(pressured.kill_and_reap())


@pytest.mark.kernel
def test_embedded_controller_leaves_loop_and_signal_handlers_alone(
    run_async: RunAsync, scratch: ScratchGroup
) -> None:
    """async with Controller: runs in the app's loop, streams its kill, stops cleanly, and the
    app's own SIGUSR1 handler and loop are untouched."""
    victim = scratch.spawn_workload("hog", "24")
    settings = Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "guard": {"cooldown_ms": 0},
            "scopes": [{"cgroup": scratch.path, "memcg_v1": scratch.memcg_path}],
        }
    )
    seen: list[str] = []

    async def app() -> tuple[KillRecord, bool]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, seen.append, "usr1")
        async with pressured.Controller(settings) as controller:
            stream = controller.events()
            waiter = asyncio.ensure_future(_first_kill(stream))
            await asyncio.sleep(0)
            await controller.scopes[0].handle(
                PressureEvent(scope=scratch.path, level="some", source=EventSource.MANUAL)
            )
            record = await asyncio.wait_for(waiter, 10)
        signal.raise_signal(signal.SIGUSR1)
        await asyncio.sleep(0.05)
        still = loop.remove_signal_handler(signal.SIGUSR1)
        return record, still

    record, handler_was_there = run_async(app())
    assert record.pid == victim.pid and record.result is KillResult.KILLED
    assert seen == ["usr1"] and handler_was_there


async def _first_kill(stream: Any) -> KillRecord:
    async for item in stream:
        if isinstance(item, KillRecord):
            return item
    raise AssertionError("stream ended")
