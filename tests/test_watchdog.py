"""The watchdog thread kills for a stuck loop under real pressure."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pressured.config import Settings
from pressured.controller import Controller
from pressured.events import EventSource, KillRecord, KillResult, PressureEvent
from pressured.ops.journal import read_journal
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
pytestmark = [pytest.mark.kernel, pytest.mark.pressure]


def test_blocked_loop_under_pressure_is_rescued_by_the_watchdog(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path
) -> None:
    """A plugin blocks the loop for 12 s; the watchdog thread kills the thrasher meanwhile,
    and its record reaches the journal once the loop is back."""
    journal = tmp_path / "kills.jsonl"
    config = write_config(
        tmp_path / "p.toml",
        scope_config(
            scratch.path,
            scratch.memcg_path,
            policies='[[scopes.policies]]\nname = "tests.fault_policies:BlockTheLoop"\n'
            "options = { seconds = 12 }\ntimeout_ms = 60000\n",
        )
        + "\n[watchdog]\nstall_limit_ms = 1000\n"
        + f'\n[journal]\npath = "{journal}"\n',
    )
    bystander = scratch.spawn_workload("sleep")
    with Daemon(config) as daemon:
        daemon.wait_for("controller.ready", 20)
        daemon.wait_for("watchdog.started", 5)
        thrasher = scratch.spawn_workload("thrash", thrash_file)
        stuck = daemon.wait_for("watchdog.loop_stuck", 30)
        assert stuck["scope"] == scratch.path
        killed = daemon.wait_for("watchdog.killed", 10)
        assert killed["pid"] == thrasher.pid
        assert killed["exited"] is True
        assert thrasher.wait(5) == -signal.SIGKILL
        assert bystander.poll() is None
        published = daemon.wait_for("victim.killed", 30, lambda line: line["policy"] == "watchdog")
        assert published["pid"] == thrasher.pid
        # The loop comes back after the plugin returns, and the daemon still stops cleanly.
        assert daemon.stop(40) == 0
    watchdog_entries = [e for e in read_journal(journal) if e["policy"] == "watchdog"]
    assert [(e["pid"], e["result"]) for e in watchdog_entries] == [(thrasher.pid, "killed")]
    # Trigger events that still carry the thrasher's stall are not a reason for a second kill.
    assert bystander.poll() is None


class RecordingSink:
    """A test sink: what the controller's publish path hands to journal, metrics, hooks."""

    def __init__(self) -> None:
        self.kills: list[KillRecord] = []
        self.arrived = asyncio.Event()

    async def on_pressure(self, event: PressureEvent) -> None:
        """Pressure events are not what this test is about."""

    async def on_kill(self, record: KillRecord) -> None:
        self.kills.append(record)
        self.arrived.set()

    async def aclose(self) -> None:
        """Nothing to release."""


def test_watchdog_kill_counts_against_the_loops_rate_limit_and_reaches_the_sinks(
    run_async: RunAsync, scratch: ScratchGroup
) -> None:
    """A kill by the watchdog thread while the loop is blocked: its record reaches the sinks
    once the loop runs again, and it uses up the loop's one kill per minute."""
    scratch.set_limit(256 << 20)
    bystander = scratch.spawn_workload("sleep")
    first = scratch.spawn_workload("hog", "48")
    second = scratch.spawn_workload("hog", "16")
    settings = Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": True},
            "guard": {
                "cooldown_ms": 0,
                "max_kills_per_minute": 1,
                "protect_cmdline": ["workloads sleep"],
            },
            "scopes": [{"cgroup": scratch.path, "memcg_v1": scratch.memcg_path}],
        }
    )
    sink = RecordingSink()

    async def go() -> tuple[list[KillRecord], list[KillRecord], KillRecord | None, int]:
        async with Controller(settings, sinks=[sink]) as controller:
            watchdog = controller.watchdog
            assert watchdog is not None
            thread = threading.Thread(target=watchdog.emergency_kill, args=(watchdog.scopes[0],))
            thread.start()
            thread.join(60)  # blocks the loop, as a stuck loop would be, while the thread kills
            before_the_loop_ran = list(sink.kills)
            async with asyncio.timeout(10):
                await sink.arrived.wait()
            event = PressureEvent(scope=scratch.path, level="some", source=EventSource.MANUAL)
            after = await controller.scopes[0].handle(event)
            return before_the_loop_ran, list(sink.kills), after, controller.scopes[0].stats.deferred

    before, published, after, deferred = run_async(go())
    assert before == []
    assert [(r.policy, r.pid, r.result) for r in published] == [
        ("watchdog", first.pid, KillResult.KILLED)
    ]
    assert first.wait(10) == -signal.SIGKILL
    assert after is None and deferred == 1  # rate limit: the watchdog's kill counted
    assert second.poll() is None
    assert bystander.poll() is None
