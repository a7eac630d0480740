"""Supervision: a scope task that dies is logged and restarted; the other scopes keep killing
and the controller keeps running."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from pressured.config import Settings
from pressured.controller import Controller
from pressured.events import EventSource, KillRecord, PressureEvent
from pressured.ops.metrics import Metrics
from pressured.supervision import Backoff, TaskRecord, supervise
from pressured.testing.scratch import ScratchGroup

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
FAST = Backoff(first_s=0.05, max_s=0.2)


@pytest.fixture
def second_scratch(scratch: ScratchGroup) -> Iterator[ScratchGroup]:
    """Another 64 MiB scratch cgroup beside ``scratch``."""
    with ScratchGroup(64 << 20) as group:
        yield group


def scopes_for(*groups: ScratchGroup) -> Settings:
    return Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": False},
            "guard": {"cooldown_ms": 0, "protect_cmdline": ["workloads sleep"]},
            "scopes": [
                {"cgroup": g.path, "memcg_v1": g.memcg_path, "starvation_check_s": 0}
                for g in groups
            ],
        }
    )


def manual(group: ScratchGroup) -> PressureEvent:
    return PressureEvent(scope=group.path, level="some", source=EventSource.MANUAL)


async def next_kill(controller: Controller, pid: int, timeout_s: float = 20.0) -> KillRecord:
    async def wait() -> KillRecord:
        async for item in controller.events():
            if isinstance(item, KillRecord) and item.pid == pid:
                return item
        raise AssertionError("event stream ended")

    return await asyncio.wait_for(wait(), timeout_s)


async def until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        # The controller's own state, changed by its tasks: nothing to await from outside.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def crash_one_scope_then_kill_in_the_other(
    broken: ScratchGroup, healthy: ScratchGroup, victim: subprocess.Popen[bytes]
) -> tuple[KillRecord, TaskRecord, bool]:
    async with Controller(scopes_for(broken, healthy), backoff=FAST) as controller:
        failing, working = controller.scopes
        calls = 0

        async def handle_that_raises(event: PressureEvent) -> KillRecord | None:
            nonlocal calls
            calls += 1
            raise RuntimeError("injected: handle failed")

        failing.handle = handle_that_raises  # type: ignore[method-assign]
        failing._offer(manual(broken))
        record = controller.tasks[f"scope:{broken.path}"]
        await until(lambda: record.crashes >= 1 and record.starts >= 2)
        # The restarted task is really serving: a second event reaches it (and fails again).
        failing._offer(manual(broken))
        await until(lambda: calls >= 2)
        kill = asyncio.create_task(next_kill(controller, victim.pid))
        await asyncio.sleep(0)
        working._offer(manual(healthy))
        killed = await kill
        running = controller._main is not None and not controller._main.done()
        return killed, record, running


@pytest.mark.kernel
def test_a_crashing_scope_is_restarted_and_the_other_scope_keeps_killing(
    run_async: RunAsync, scratch: ScratchGroup, second_scratch: ScratchGroup
) -> None:
    """A scope whose handle raises is logged (task.crashed) and restarted; the other scope
    still kills its real victim, and the controller is still running."""
    victim = second_scratch.spawn_workload("hog", "16")
    with capture_logs() as logs:
        killed, record, running = run_async(
            crash_one_scope_then_kill_in_the_other(scratch, second_scratch, victim)
        )
    assert killed.pid == victim.pid
    assert victim.wait(10) == -signal.SIGKILL
    assert running
    assert record.crashes >= 2 and "injected" in (record.last_error or "")
    crashed = [line for line in logs if line["event"] == "task.crashed"]
    assert crashed and crashed[0]["task"] == f"scope:{scratch.path}"
    assert any(line["event"] == "task.restarted" for line in logs)


async def threaded_child_then_kill(
    broken: ScratchGroup,
    healthy: ScratchGroup,
    victim: subprocess.Popen[bytes],
    metrics: Metrics,
) -> tuple[KillRecord, bool]:
    async with Controller(scopes_for(broken, healthy), backoff=FAST, metrics=metrics) as controller:
        failing, working = controller.scopes
        failing._offer(manual(broken))
        await until(lambda: failing.stats.events >= 1 and failing.decision_started is None)
        kill = asyncio.create_task(next_kill(controller, victim.pid))
        await asyncio.sleep(0)
        working._offer(manual(healthy))
        killed = await kill
        running = controller._main is not None and not controller._main.done()
        return killed, running


@pytest.mark.kernel
def test_a_threaded_child_group_does_not_stop_the_other_scope(
    run_async: RunAsync, scratch: ScratchGroup, second_scratch: ScratchGroup
) -> None:
    """A threaded child group (its cgroup.procs fails with EOPNOTSUPP) in one scope: an event
    there does not stop the controller, and the other scope still kills its victim."""
    domain = scratch.child("domain")
    threaded = domain.directory / "threaded"
    threaded.mkdir()
    (threaded / "cgroup.type").write_text("threaded")
    scratch.spawn_workload("sleep", group=domain)
    victim = second_scratch.spawn_workload("hog", "16")
    metrics = Metrics()
    killed, running = run_async(threaded_child_then_kill(scratch, second_scratch, victim, metrics))
    assert killed.pid == victim.pid
    assert running
    assert victim.wait(10) == -signal.SIGKILL
    # The problem is counted where an operator sees it, per scope: the broken one only.
    assert (metrics.value("pressured_scan_problems_total", {"scope": scratch.path}) or 0) >= 1
    assert metrics.value("pressured_scan_problems_total", {"scope": second_scratch.path}) is None
    assert metrics.value("pressured_scans_total", {"scope": scratch.path, "outcome": "complete"})


async def fail_fast_forever(runs: int) -> TaskRecord:
    record = TaskRecord("always-fails")

    async def always_fails() -> None:
        raise OSError("nope")

    task = asyncio.create_task(
        supervise("always-fails", always_fails, backoff=Backoff(0.01, 0.04), record=record)
    )
    await until(lambda: record.starts >= runs)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return record


def test_a_task_that_fails_at_once_is_restarted_with_growing_delays(run_async: RunAsync) -> None:
    """Each failure is counted and followed by a delay: the supervisor never spins, and
    cancelling it ends it."""
    record = run_async(fail_fast_forever(5))
    assert record.crashes >= 4
    assert record.last_error == "OSError('nope')"


def test_zero_backoff_is_refused() -> None:
    """A zero delay would let a failing task spin: refused when the backoff is made."""
    with pytest.raises(ValueError, match="spin"):
        Backoff(first_s=0)


async def returns_once() -> TaskRecord:
    record = TaskRecord("done")

    async def finish() -> None:
        return None

    await supervise("done", finish, record=record)
    return record


def test_a_task_that_returns_is_not_restarted(run_async: RunAsync) -> None:
    """Returning is a deliberate end (a monitor with nothing to watch): one start only."""
    record = run_async(returns_once())
    assert record.starts == 1 and record.finished and record.crashes == 0


class SwallowingSink:
    """A sink that ignores cancellation and never returns from on_pressure."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def on_pressure(self, event: PressureEvent) -> None:
        while not self.release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await self.release.wait()

    async def on_kill(self, record: KillRecord) -> None:
        return None

    async def aclose(self) -> None:
        self.release.set()


async def handle_with_a_stuck_sink(group: ScratchGroup) -> KillRecord | None:
    settings = scopes_for(group)
    sink = SwallowingSink()
    async with Controller(settings, sinks=[sink]) as controller:
        return await asyncio.wait_for(controller.scopes[0].handle(manual(group)), 20)


@pytest.mark.kernel
def test_a_sink_that_swallows_cancellation_cannot_hold_the_decision(
    run_async: RunAsync, scratch: ScratchGroup
) -> None:
    """The sink call is abandoned at its time limit (sink.failed) and the kill goes ahead."""
    victim = scratch.spawn_workload("hog", "16")
    with capture_logs() as logs:
        record = run_async(handle_with_a_stuck_sink(scratch))
    assert record is not None and record.pid == victim.pid
    assert victim.wait(10) == -signal.SIGKILL
    assert any(line["event"] == "sink.failed" for line in logs)


async def handle_an_old_event(group: ScratchGroup) -> tuple[KillRecord | None, int]:
    async with Controller(scopes_for(group)) as controller:
        runner = controller.scopes[0]
        old = PressureEvent(
            scope=group.path,
            level="some",
            source=EventSource.PSI,
            monotonic_ns=time.monotonic_ns() - 60 * 10**9,
        )
        record = await runner.handle(old)
        return record, runner.stats.deferred


@pytest.mark.kernel
def test_an_event_that_waited_past_a_restart_is_not_acted_on(
    run_async: RunAsync, scratch: ScratchGroup
) -> None:
    """An event queued a minute ago (a scope restarting after crashes) is deferred as stale:
    the process that caused it is gone, and acting now would take a bystander."""
    bystander = scratch.spawn_workload("hog", "16")
    record, deferred = run_async(handle_an_old_event(scratch))
    assert record is None and deferred == 1
    assert bystander.poll() is None


async def spawn_a_failing_task(group: ScratchGroup) -> tuple[int, bool]:
    async with Controller(scopes_for(group), backoff=FAST) as controller:
        runs = 0

        async def ping() -> None:
            nonlocal runs
            runs += 1
            raise ConnectionRefusedError("notify socket gone")

        controller.spawn("sdnotify", ping)
        await until(lambda: runs >= 2)
        running = controller._main is not None and not controller._main.done()
        return controller.tasks["sdnotify"].crashes, running


@pytest.mark.kernel
def test_a_spawned_task_that_fails_is_restarted_and_the_controller_runs_on(
    run_async: RunAsync, scratch: ScratchGroup
) -> None:
    """A daemon task run through Controller.spawn (the sd_notify ping) is supervised: its
    failures are counted and it runs again, and the controller keeps running."""
    crashes, running = run_async(spawn_a_failing_task(scratch))
    assert crashes >= 1 and running


def own_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def reload_many(group: ScratchGroup, times: int) -> tuple[int, int, int, int]:
    settings = scopes_for(group)
    async with Controller(settings, reload=lambda: settings) as controller:
        assert await controller.reload()  # the first reload's one-time costs out of the way
        threads, fds = threading.active_count(), own_fds()
        for _ in range(times):
            assert await controller.reload()
        # A retired scope's idle worker threads exit on their own, soon after: wait for them
        # (a leak never gets there, and the wait ends with the counts as they are).
        with contextlib.suppress(TimeoutError):
            await until(lambda: threading.active_count() <= threads, 5.0)
        return threads, threading.active_count(), fds, own_fds()


@pytest.mark.kernel
def test_reloads_leave_no_threads_or_fds_behind(run_async: RunAsync, scratch: ScratchGroup) -> None:
    """Twenty reloads (a SIGHUP storm): every replaced scope is closed, so the threads and
    fds after are no more than before."""
    threads_before, threads_after, fds_before, fds_after = run_async(reload_many(scratch, 20))
    assert threads_after <= threads_before
    assert fds_after <= fds_before
