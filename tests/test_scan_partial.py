"""A short scan is said and still decided on (issue #12 item 5).

Real processes in a scratch group; the scan's clock is the seam: a clock that jumps past the
deadline once the first phase is done makes the cut land at a known point, where a real
deadline would land wherever the machine's load puts it.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import structlog

from pressured.config import Settings
from pressured.controller import Controller
from pressured.events import EventSource, KillRecord, KillResult, PressureEvent
from pressured.policies.largest import LargestOptions, LargestPolicy
from pressured.scan.plan import plan_for
from pressured.snapshot import take_snapshot
from pressured.testing.scratch import ScratchGroup

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
pytestmark = [pytest.mark.kernel]
SLEEPERS = 150
HOG = """
import sys, time
block = bytearray(96 << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
print("ready", flush=True)
time.sleep(600)
"""
EVENT = PressureEvent(scope="test", level="some", source=EventSource.MANUAL)


@pytest.fixture
def crowd(scratch: ScratchGroup) -> tuple[ScratchGroup, subprocess.Popen[bytes]]:
    """150 sleepers, then one 96 MiB hog: the hog comes last in the group's PID order."""
    scratch.set_limit(1 << 30)
    for _ in range(SLEEPERS):
        scratch.spawn(["sleep", "600"], stdout=subprocess.DEVNULL)
    hog = scratch.spawn([sys.executable, "-c", HOG])
    assert hog.stdout is not None and hog.stdout.readline().startswith(b"ready")
    deadline = time.monotonic() + 30
    while len(scratch.group.all_members()) < SLEEPERS + 1:
        assert time.monotonic() < deadline, "the crowd did not gather"
        time.sleep(0.02)
    return scratch, hog


def late_clock(calls_before_deadline: int) -> Callable[[], float]:
    """A clock that stands still for ``calls_before_deadline`` readings, then leaps an hour."""
    counter = itertools.count()
    return lambda: 0.0 if next(counter) < calls_before_deadline else 3600.0


def test_an_empty_scan_is_an_error_not_no_candidate(
    crowd: tuple[ScratchGroup, subprocess.Popen[bytes]],
) -> None:
    """A scan that read nothing of a scope with members logs scan.empty at error level."""
    group, _hog = crowd
    with structlog.testing.capture_logs() as logs:
        snapshot = take_snapshot(
            EVENT,
            layout=group.layout,
            cgroup_path=group.path,
            memcg_v1_path=group.memcg_path,
            proc_root="/nonexistent-proc",  # nothing can be read
        )
    assert snapshot.expected_processes == SLEEPERS + 1
    assert snapshot.read_processes == 0
    assert [entry["log_level"] for entry in logs if entry["event"] == "scan.empty"] == ["error"]


def test_a_scan_cut_by_its_deadline_reads_the_largest_first(
    crowd: tuple[ScratchGroup, subprocess.Popen[bytes]],
) -> None:
    """Cut right after the skim: the one full record read is the hog's, though it is last."""
    group, hog = crowd
    snapshot = take_snapshot(
        EVENT,
        layout=group.layout,
        cgroup_path=group.path,
        memcg_v1_path=group.memcg_path,
        plan=plan_for([LargestPolicy(LargestOptions())]),
        clock=late_clock(3),  # start, and the skim's checks at 64 and 128
        deadline_s=1.0,
    )
    assert not snapshot.complete
    assert snapshot.expected_processes == SLEEPERS + 1
    assert [record.pid for record in snapshot.processes] == [hog.pid]


def settings_for(scratch: ScratchGroup) -> Settings:
    return Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": False},
            "guard": {"cooldown_ms": 0},
            "scopes": [
                {
                    "cgroup": scratch.path,
                    "memcg_v1": scratch.memcg_path,
                    "starvation_check_s": 0,
                    "policies": [{"name": "largest"}],
                }
            ],
        }
    )


async def kill_with_a_short_scan(scratch: ScratchGroup) -> KillRecord | None:
    async with Controller(settings_for(scratch)) as controller:
        runner = controller.scopes[0]
        runner.scan_clock = late_clock(3)
        event = PressureEvent(scope=runner.name, level="some", source=EventSource.MANUAL)
        return await runner.handle(event)


def test_a_short_scan_still_kills_the_largest_and_the_record_says_partial(
    run_async: RunAsync, crowd: tuple[ScratchGroup, subprocess.Popen[bytes]]
) -> None:
    """The deadline cuts the scan; the hog dies anyway; the kill record says how much was read."""
    group, hog = crowd
    record = run_async(kill_with_a_short_scan(group))
    assert record is not None and record.result is KillResult.KILLED
    assert record.pid == hog.pid
    assert hog.wait(10) == -signal.SIGKILL
    assert record.scan_complete is False
    assert record.scan_expected == SLEEPERS + 1
    assert record.scan_read == SLEEPERS + 1  # every process skimmed, one read in full
    assert "scan_start" in record.stages_ms and "decided" in record.stages_ms
