"""/healthz reports a scope whose decision path is stuck, naming the scope, and recovers when
the decision finishes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest

from pressured.config import Settings
from pressured.controller import Controller
from pressured.events import EventSource, PressureEvent
from pressured.ops.http import OpsServer
from pressured.scan.plan import ScanPlan
from pressured.snapshot import Snapshot
from pressured.testing.scratch import ScratchGroup

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
pytestmark = [pytest.mark.kernel]


async def get_healthz(url: str) -> tuple[int, str]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    return int(head.split()[1]), body


async def until_status(url: str, wanted: int, timeout_s: float = 20.0) -> str:
    async with asyncio.timeout(timeout_s):
        while True:
            status, body = await get_healthz(url)
            if status == wanted:
                return body
            await asyncio.sleep(0.05)


async def stuck_then_released(scratch: ScratchGroup) -> tuple[str, str, bool]:
    settings = Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": False},
            "scopes": [
                {"cgroup": scratch.path, "memcg_v1": scratch.memcg_path, "starvation_check_s": 0}
            ],
        }
    )
    # A real blocked I/O thread: a read from a pipe nobody writes to yet, on the snapshot
    # hop, as a scan stuck on a process's mmap_lock would be.
    blocker = ThreadPoolExecutor(1, thread_name_prefix="test-blocked-io")
    read_end, write_end = os.pipe()
    try:
        async with Controller(settings, decision_margin_s=0.3) as controller:
            runner = controller.scopes[0]
            take_snapshot = runner.take_snapshot
            blocked: list[bool] = []

            async def blocked_snapshot(event: PressureEvent, plan: ScanPlan | None) -> Snapshot:
                # The first snapshot only: the chain's fallback takes a second (wider) one.
                if not blocked:
                    blocked.append(True)
                    loop = asyncio.get_running_loop()
                    await loop.run_in_executor(blocker, os.read, read_end, 1)
                return await take_snapshot(event, plan)

            runner.take_snapshot = blocked_snapshot  # type: ignore[method-assign]
            server = OpsServer("127.0.0.1", 0, health=controller.health)
            await server.start()
            try:
                status, healthy_before = await get_healthz(server.url)
                assert status == 200, healthy_before
                runner._offer(
                    PressureEvent(scope=scratch.path, level="some", source=EventSource.MANUAL)
                )
                stuck = await until_status(server.url, 503)
                os.write(write_end, b"x")
                recovered = await until_status(server.url, 200)
            finally:
                await server.aclose()
            return stuck, recovered, runner.stats.decisions == 1
    finally:
        os.close(write_end)
        os.close(read_end)
        blocker.shutdown(wait=True)


def test_a_stuck_decision_makes_healthz_unhealthy_naming_the_scope(
    run_async: RunAsync, scratch: ScratchGroup
) -> None:
    """While the snapshot hop is blocked past the limit, /healthz answers 503 naming the scope
    and the phase; once it is released the decision completes and /healthz is 200 again."""
    stuck, recovered, decided = run_async(stuck_then_released(scratch))
    assert scratch.path in stuck and "snapshot" in stuck
    assert "ok" in recovered
    assert decided
