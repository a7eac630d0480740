"""Injected faults: after each one the controller still kills the right process.

Each test runs an embedded Controller scoped to a scratch cgroup with real processes, injects
one fault, then proves the controller still reacts by handling a normal event afterwards.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, ClassVar

import pytest

from pressured.config import Settings
from pressured.controller import Controller
from pressured.events import EventSource, KillRecord, KillResult, PressureEvent
from pressured.kernel import pidfd, psi
from pressured.policies.base import BasePolicy, Decision, PolicyOptions, Victim
from pressured.snapshot import Snapshot
from pressured.testing.scratch import ScratchGroup
from tests.freezing import frozen_v1

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
pytestmark = pytest.mark.kernel


def settings_for(
    scratch: ScratchGroup,
    *,
    policies: list[dict[str, Any]] | None = None,
    guard: dict[str, Any] | None = None,
    kill: dict[str, Any] | None = None,
) -> Settings:
    scope: dict[str, Any] = {"cgroup": scratch.path, "memcg_v1": scratch.memcg_path}
    if policies is not None:
        scope["policies"] = policies
    return Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": False},
            "guard": {"cooldown_ms": 0, **(guard or {})},
            "kill": kill or {},
            "scopes": [scope],
        }
    )


def manual(scratch: ScratchGroup) -> PressureEvent:
    return PressureEvent(scope=scratch.path, level="some", source=EventSource.MANUAL)


async def handle(controller: Controller, scratch: ScratchGroup) -> KillRecord | None:
    return await controller.scopes[0].handle(manual(scratch))


def assert_still_reacting(
    run_async: RunAsync, scratch: ScratchGroup, controller_factory: Callable[[], Controller]
) -> None:
    """A fresh victim is killed normally by a controller built the same way."""
    victim = scratch.spawn_workload("hog", "24")

    async def again() -> KillRecord | None:
        async with controller_factory() as controller:
            return await handle(controller, scratch)

    record = run_async(again())
    assert record is not None and record.pid == victim.pid
    assert record.result is KillResult.KILLED
    assert victim.wait(10) == -signal.SIGKILL


@pytest.fixture
def bystander(scratch: ScratchGroup) -> Iterator[subprocess.Popen[bytes]]:
    proc = scratch.spawn_workload("sleep")
    yield proc
    assert proc.poll() is None, "the bystander must never be killed"


class VanishOptions(PolicyOptions):
    pass


class KillsItsOwnChoice(BasePolicy[VanishOptions]):
    """Chooses the largest candidate, then makes it exit before the actuator gets to it."""

    name: ClassVar[str] = "kills_its_own_choice"
    Options = VanishOptions

    async def __call__(self, snapshot: Snapshot) -> Decision:
        top = max(snapshot.candidates, key=lambda p: p.memory_bytes)
        fd = pidfd.open_pidfd(top.pid)
        pidfd.send_signal(fd)
        await asyncio.sleep(0.2)
        pidfd.close_quietly(fd)
        return Decision.kill(Victim.process(top, "largest"))


def test_victim_exits_between_choice_and_signal(
    run_async: RunAsync, scratch: ScratchGroup, bystander: subprocess.Popen[bytes]
) -> None:
    """The chosen victim is already gone: VANISHED, nobody else signalled, next kill works."""
    victim = scratch.spawn_workload("hog", "24")
    settings = settings_for(scratch, policies=[{"name": f"{__name__}:KillsItsOwnChoice"}])

    async def go() -> KillRecord | None:
        async with Controller(settings) as controller:
            return await handle(controller, scratch)

    record = run_async(go())
    assert record is not None and record.result is KillResult.VANISHED
    assert record.pid == victim.pid
    victim.wait(5)
    assert_still_reacting(run_async, scratch, lambda: Controller(settings_for(scratch)))


class GroupOptions(PolicyOptions):
    path: str


class RemovesTheGroup(BasePolicy[GroupOptions]):
    """Chooses a child cgroup, then empties and removes it before the kill."""

    name: ClassVar[str] = "removes_the_group"
    Options = GroupOptions

    async def __call__(self, snapshot: Snapshot) -> Decision:
        record = snapshot.cgroup(self.options.path)
        assert record is not None
        from pressured.kernel.cgroupfs import Cgroup, discover_layout

        group = Cgroup(discover_layout(), self.options.path)
        group.kill()
        for _ in range(200):
            if not group.populated():
                break
            await asyncio.sleep(0.01)
        group.remove()
        return Decision.kill(Victim.group(record, "doomed"))


def test_cgroup_removed_between_snapshot_and_kill(
    run_async: RunAsync, scratch: ScratchGroup, bystander: subprocess.Popen[bytes]
) -> None:
    """The victim group is gone by kill time: VANISHED, no error, the next kill works."""
    child = scratch.child("doomed")
    member = scratch.spawn_workload("sleep", group=child)
    settings = settings_for(
        scratch,
        policies=[{"name": f"{__name__}:RemovesTheGroup", "options": {"path": child.path}}],
    )

    async def go() -> KillRecord | None:
        async with Controller(settings) as controller:
            return await handle(controller, scratch)

    record = run_async(go())
    assert record is not None and record.result is KillResult.VANISHED
    member.wait(5)
    assert_still_reacting(run_async, scratch, lambda: Controller(settings_for(scratch)))


@pytest.mark.parametrize(
    ("err", "status", "attempts"),
    [
        (errno.EAGAIN, "partial", 4),
        (errno.EINTR, "interrupted", 4),
        (errno.ENOSYS, "unsupported", 1),
        (errno.ESRCH, "gone", 1),
    ],
)
def test_mrelease_errors_still_kill(
    run_async: RunAsync,
    scratch: ScratchGroup,
    bystander: subprocess.Popen[bytes],
    err: int,
    status: str,
    attempts: int,
) -> None:
    """EAGAIN/EINTR are retried (3 retries), ENOSYS/ESRCH are not; the SIGKILL still lands."""
    victim = scratch.spawn_workload("hog", "24")
    previous = pidfd.set_mrelease_call(lambda fd, flags: err)
    try:

        async def go() -> KillRecord | None:
            async with Controller(settings_for(scratch)) as controller:
                return await handle(controller, scratch)

        record = run_async(go())
    finally:
        pidfd.set_mrelease_call(previous)
    assert record is not None and record.result is KillResult.KILLED
    assert record.mrelease is not None
    assert str(record.mrelease.status) == status
    assert record.mrelease.attempts == attempts
    if err == errno.ESRCH:
        assert record.victim_boosted
    assert victim.wait(10) == -signal.SIGKILL
    assert_still_reacting(run_async, scratch, lambda: Controller(settings_for(scratch)))


def test_dead_reaper_thread_is_replaced(
    run_async: RunAsync, scratch: ScratchGroup, bystander: subprocess.Popen[bytes]
) -> None:
    """The reaper's thread is gone: the kill replaces it (logged) and still lands."""
    victim = scratch.spawn_workload("hog", "24")

    async def go() -> tuple[KillRecord | None, int]:
        async with Controller(settings_for(scratch)) as controller:
            controller.reaper.close()  # the thread dies
            record = await handle(controller, scratch)
            return record, controller.reaper.restarts

    record, restarts = run_async(go())
    assert restarts == 1
    assert record is not None and record.result is KillResult.KILLED
    assert victim.wait(10) == -signal.SIGKILL


def test_stuck_reaper_thread_is_replaced(
    run_async: RunAsync, scratch: ScratchGroup, bystander: subprocess.Popen[bytes]
) -> None:
    """A reaper thread stuck in a job: after reaper_timeout_ms it is replaced, the kill lands."""
    victim = scratch.spawn_workload("hog", "24")
    gate = threading.Event()

    async def go() -> tuple[KillRecord | None, int]:
        settings = settings_for(scratch, kill={"reaper_timeout_ms": 300})
        async with Controller(settings) as controller:
            controller.reaper.submit(gate.wait)  # wedge the thread
            record = await handle(controller, scratch)
            gate.set()
            return record, controller.reaper.restarts

    record, restarts = run_async(go())
    assert restarts == 1
    assert record is not None and record.result is KillResult.KILLED
    assert victim.wait(10) == -signal.SIGKILL


def test_hanging_raising_and_garbage_policies_fall_through(
    run_async: RunAsync, scratch: ScratchGroup, bystander: subprocess.Popen[bytes]
) -> None:
    """Hang (cut at its limit), raise, garbage: each skipped; oom_score still decides."""
    victim = scratch.spawn_workload("hog", "24")
    policies: list[dict[str, Any]] = [
        {"name": "tests.fault_policies:Hang", "timeout_ms": 200},
        {"name": "tests.fault_policies:Raise"},
        {"name": "tests.fault_policies:Garbage"},
        {"name": "oom_score"},
    ]

    async def go() -> tuple[KillRecord | None, list[int]]:
        async with Controller(settings_for(scratch, policies=policies)) as controller:
            record = await handle(controller, scratch)
            return record, [link.failures for link in controller.scopes[0].chain.links]

    record, failures = run_async(go())
    assert failures == [1, 1, 1, 0]
    assert record is not None and record.policy == "oom_score"
    assert record.pid == victim.pid and record.result is KillResult.KILLED


def test_event_burst_is_bounded_and_the_rate_limit_holds(
    run_async: RunAsync, scratch: ScratchGroup, bystander: subprocess.Popen[bytes]
) -> None:
    """20,000 trigger events in a burst: the queue stays bounded, kills obey the rate limit,
    memory stays flat."""
    scratch.set_limit(512 << 20)
    victims = [scratch.spawn_workload("hog", "8") for _ in range(5)]
    settings = settings_for(
        scratch, guard={"max_kills_per_minute": 2, "protect_cmdline": ["workloads sleep"]}
    )

    async def go() -> tuple[int, int, int, int]:
        async with Controller(settings) as controller:
            runner = controller.scopes[0]
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            peak_queue = 0
            for round_ in range(200):
                for _ in range(100):
                    runner._offer(manual(scratch))  # what the trigger callback does
                peak_queue = max(peak_queue, runner.queue.qsize())
                await asyncio.sleep(0.005 if round_ % 10 else 0.05)
            grown = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            return runner.stats.kills, runner.stats.dropped_events, peak_queue, grown

    kills, dropped, peak_queue, grown = run_async(go())
    assert kills == 2
    assert dropped > 15_000
    assert peak_queue <= 8
    assert grown < 2 << 20
    assert sum(1 for v in victims if v.poll() is None) == 3


def test_reload_keeps_the_cooldown_of_the_last_kill(
    run_async: RunAsync, scratch: ScratchGroup, bystander: subprocess.Popen[bytes]
) -> None:
    """A kill, then SIGHUP's reload, then an event inside the cooldown: deferred, not a
    second kill (the reload used to start the guard's history over)."""
    scratch.set_limit(256 << 20)
    first = scratch.spawn_workload("hog", "32")
    second = scratch.spawn_workload("hog", "16")
    settings = settings_for(
        scratch, guard={"cooldown_ms": 600_000, "protect_cmdline": ["workloads sleep"]}
    )

    async def go() -> tuple[KillRecord | None, KillRecord | None, int]:
        async with Controller(settings, reload=lambda: settings) as controller:
            killed = await handle(controller, scratch)
            assert await controller.reload()
            after = await handle(controller, scratch)
            return killed, after, controller.scopes[0].stats.deferred

    killed, after, deferred = run_async(go())
    assert killed is not None and killed.pid == first.pid
    assert first.wait(10) == -signal.SIGKILL
    assert after is None and deferred == 1
    assert second.poll() is None


def psi_event(scratch: ScratchGroup) -> PressureEvent:
    trigger = psi.TriggerSpec(psi.Resource.MEMORY, "some", 140_000, 2_000_000)
    return PressureEvent(scope=scratch.path, level="some", source=EventSource.PSI, trigger=trigger)


def test_frozen_victim_is_reaped_and_the_scope_moves_on_to_the_next_thrasher(
    run_async: RunAsync, scratch: ScratchGroup, bystander: subprocess.Popen[bytes]
) -> None:
    """A frozen victim cannot exit after SIGKILL, yet mrelease frees its memory: the scope
    acts again at once (the next victim is killed while the frozen one still lives) and the
    frozen one is never chosen again."""
    scratch.set_limit(256 << 20)
    frozen = scratch.spawn_workload("hog", "48")
    second = scratch.spawn_workload("hog", "24")
    settings = settings_for(
        scratch,
        policies=[{"name": "largest"}],
        guard={"protect_cmdline": ["workloads sleep"]},
        kill={"confirm_timeout_ms": 120_000},
    )
    with frozen_v1(frozen.pid) as freezer:

        async def go() -> tuple[list[KillRecord | None], int, bool, bool, KillResult, bool]:
            async with Controller(settings) as controller:
                started = time.monotonic()
                records = [await handle(controller, scratch)]
                print(f"frozen victim: scope free after {time.monotonic() - started:.2f} s")
                in_flight = controller.scopes[0].guard.in_flight
                # A trigger event right after it may count the stall the kill just ended.
                stale = controller.scopes[0]._stale(psi_event(scratch))
                assert stale is not None and stale.startswith("stale")
                # Nor are the scope's refaults evidence while its victim is still dying.
                guard = controller.scopes[0].guard
                assert guard.victim_dying(scratch.path) is not None
                records.append(await handle(controller, scratch))
                records.append(await handle(controller, scratch))
                watched = any(pid == frozen.pid for pid, _ in controller.deaths.dying)
                alive_through_it_all = frozen.poll() is None
                # Thawed, it dies of the SIGKILL it has pending; the record is brought up
                # to date in the background.
                (freezer / "freezer.state").write_text("THAWED")
                async with asyncio.timeout(30):
                    await controller.deaths.wait_all()
                final = controller.recent[0].result
                evidence_again = guard.victim_dying(scratch.path) is None
                return records, in_flight, watched, alive_through_it_all, final, evidence_again

        records, in_flight, watched, alive_through_it_all, final, evidence_again = run_async(go())
        first, then, last = records
        assert first is not None and first.pid == frozen.pid
        assert first.result is KillResult.DYING
        assert first.mrelease is not None and str(first.mrelease.status) == "reaped"
        assert in_flight == 0
        assert then is not None and then.pid == second.pid
        assert then.result is KillResult.KILLED
        assert watched
        assert last is None  # the frozen one is no candidate; the bystander is protected
        assert alive_through_it_all  # all that happened while the frozen one still lived
        assert final is KillResult.KILLED
        assert evidence_again
    assert frozen.wait(10) == -signal.SIGKILL
    assert second.wait(10) == -signal.SIGKILL
