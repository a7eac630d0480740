"""The operations HTTP server: /metrics, /healthz (200 and 503), /status, errors, and a
/healthz that idle, trickling or greedy clients cannot take down; both loops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.request
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pressured.events import EventSource, PressureEvent
from pressured.ops.http import OpsServer
from pressured.ops.metrics import Metrics
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


async def fetch(
    port: int, path: str, method: str = "GET", raw: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to 127.0.0.1:port; returns status, headers (lower-case) and body."""
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = raw or f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        writer.write(request)
        await writer.drain()
        response = await reader.read()  # the server closes after one response
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def health_state() -> tuple[Callable[[], tuple[bool, str]], list[tuple[bool, str]]]:
    state = [(True, "ok")]
    return (lambda: state[0]), state


def status_doc() -> Mapping[str, Any]:
    return {"version": "0.1.0", "scopes": [{"name": "system", "triggers": 2}], "last_kills": []}


def test_metrics_endpoint(run_async: Runner) -> None:
    """GET /metrics answers the Prometheus text format with our samples."""
    metrics = Metrics()

    async def scenario() -> None:
        await metrics.on_pressure(PressureEvent("system", "some", EventSource.PSI))
        async with OpsServer("127.0.0.1", 0, metrics=metrics) as server:
            assert server.port != 0
            status, headers, body = await fetch(server.port, "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=")
        assert int(headers["content-length"]) == len(body)
        text = body.decode()
        assert (
            'pressured_pressure_events_total{pressure_level="some",scope="system",source="psi"} 1.0'
            in text
        )

    run_async(scenario())


def test_metrics_rendered_on_executor(run_async: Runner) -> None:
    """With an executor, /metrics is rendered off the loop thread and still answers."""
    metrics = Metrics()
    with ThreadPoolExecutor(1) as pool:

        async def scenario() -> None:
            async with OpsServer("127.0.0.1", 0, metrics=metrics, executor=pool) as server:
                status, _, body = await fetch(server.port, "/metrics")
            assert status == 200
            assert b"pressured_build_info" in body

        run_async(scenario())


def test_healthz_healthy_and_unhealthy(run_async: Runner) -> None:
    """/healthz is 200 "ok" while healthy and 503 with the reason when not."""
    health, state = health_state()

    async def scenario() -> None:
        async with OpsServer("127.0.0.1", 0, health=health) as server:
            status, _, body = await fetch(server.port, "/healthz")
            assert (status, body) == (200, b"ok\n")
            state[0] = (False, "reaper thread stuck for 3.2 s")
            status, _, body = await fetch(server.port, "/healthz")
            assert status == 503
            assert body == b"reaper thread stuck for 3.2 s\n"

    run_async(scenario())


def test_healthz_callback_raising_is_503(run_async: Runner) -> None:
    """A health callback that raises makes /healthz 503, not a dead server."""

    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    async def scenario() -> None:
        async with OpsServer("127.0.0.1", 0, health=broken) as server:
            status, _, body = await fetch(server.port, "/healthz")
            assert status == 503
            assert b"boom" in body
            status, _, _ = await fetch(server.port, "/healthz")
            assert status == 503

    run_async(scenario())


def test_status_endpoint_is_json(run_async: Runner) -> None:
    """/status answers the status callback's mapping as JSON."""

    async def scenario() -> None:
        async with OpsServer("127.0.0.1", 0, status=status_doc) as server:
            status, headers, body = await fetch(server.port, "/status?verbose=1")
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == status_doc()

    run_async(scenario())


def test_unknown_path_and_method(run_async: Runner) -> None:
    """Unknown paths are 404, other methods 405 with Allow, HEAD has no body."""

    async def scenario() -> None:
        async with OpsServer("127.0.0.1", 0, metrics=Metrics()) as server:
            status, _, _ = await fetch(server.port, "/nope")
            assert status == 404
            status, headers, _ = await fetch(server.port, "/metrics", method="POST")
            assert status == 405
            assert headers["allow"] == "GET, HEAD"
            status, headers, body = await fetch(server.port, "/metrics", method="HEAD")
            assert status == 200
            assert body == b""
            assert int(headers["content-length"]) > 0
            status, _, _ = await fetch(server.port, "/status")
            assert status == 404  # no status callback given

    run_async(scenario())


def test_bad_and_oversized_requests(run_async: Runner) -> None:
    """Garbage gets 400, a request head over the limit 431; the server keeps serving."""

    async def scenario() -> None:
        async with OpsServer("127.0.0.1", 0) as server:
            status, _, _ = await fetch(server.port, "", raw=b"HELLO\r\n\r\n")
            assert status == 400
            huge = b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n"
            status, _, _ = await fetch(server.port, "", raw=huge)
            assert status == 431
            status, _, _ = await fetch(server.port, "/healthz")
            assert status == 200

    run_async(scenario())


def test_slow_client_is_dropped(run_async: Runner) -> None:
    """A client that never finishes its request is disconnected after the timeout."""

    async def scenario() -> None:
        async with OpsServer("127.0.0.1", 0, head_timeout_s=0.2) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            async with asyncio.timeout(3):
                assert await reader.read() == b""
            writer.close()

    run_async(scenario())


def test_aclose_drops_open_connections(run_async: Runner) -> None:
    """aclose() returns promptly although a client holds a connection open."""

    async def scenario() -> None:
        server = OpsServer("127.0.0.1", 0, request_timeout_s=30)
        await server.start()
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.sleep(0)  # let the server accept it
        async with asyncio.timeout(3):
            await server.aclose()
        writer.close()
        await server.aclose()  # idempotent

    run_async(scenario())


def test_async_health_and_status_callbacks(run_async: Runner) -> None:
    """Async callbacks (like Controller.health) are awaited; one that hangs is a 503."""
    healthy = [True]

    async def health() -> tuple[bool, str]:
        if healthy[0]:
            return True, "ok"
        await asyncio.sleep(60)
        return True, "never"

    async def status() -> Mapping[str, Any]:
        return {"async": True}

    async def scenario() -> None:
        server = OpsServer("127.0.0.1", 0, health=health, status=status, request_timeout_s=0.3)
        async with server:
            assert (await fetch(server.port, "/healthz"))[0] == 200
            assert json.loads((await fetch(server.port, "/status"))[2]) == {"async": True}
            healthy[0] = False
            status_code, _, body = await fetch(server.port, "/healthz")
            assert status_code == 503
            assert b"did not answer" in body

    run_async(scenario())


# -- nobody can take /healthz down --------------------------------------------------------------


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections that never send a byte."""
    writers = []
    for _ in range(count):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
    return writers


async def accepted(server: OpsServer, count: int) -> None:
    """Wait until the server has taken ``count`` connections (open or dropped for room)."""
    async with asyncio.timeout(10):
        # The server keeps counts, not events, for its connections: poll under the timeout.
        while server.open_connections + server.dropped < count:  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()


def test_idle_connections_do_not_make_healthz_503(run_async: Runner) -> None:
    """16, then 200 idle connections from the probe's own address: /healthz still answers 200."""

    async def scenario() -> None:
        async with OpsServer("127.0.0.1", 0, head_timeout_s=30) as server:
            idle = await open_idle(server.port, 16)
            try:
                await accepted(server, 16)
                assert (await fetch(server.port, "/healthz"))[:1] == (200,)
                idle += await open_idle(server.port, 200 - 16)
                await accepted(server, 200)
                status, _, body = await fetch(server.port, "/healthz")
                assert (status, body) == (200, b"ok\n")
                assert server.open_connections <= 64  # the cap held: the rest were dropped
            finally:
                close_all(idle)

    run_async(scenario())


def test_one_greedy_client_cannot_push_out_another_clients_connections(
    run_async: Runner,
) -> None:
    """Per-client cap: 200 idle connections from 127.0.0.2 leave at most 8 of its own open and
    never drop the connections another address opened before it."""

    async def scenario() -> None:
        async with OpsServer("127.0.0.1", 0, head_timeout_s=30) as server:
            patient = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
            await accepted(server, 4)
            greedy = []
            try:
                for _ in range(200):
                    greedy.append(
                        await asyncio.open_connection(
                            "127.0.0.1", server.port, local_addr=("127.0.0.2", 0)
                        )
                    )
                await accepted(server, 204)
                assert server.open_connections == 4 + 8
                for reader, writer in patient:
                    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
                    await writer.drain()
                    async with asyncio.timeout(5):
                        assert (await reader.read()).startswith(b"HTTP/1.1 200 OK")
            finally:
                close_all([writer for _, writer in patient + greedy])

    run_async(scenario())


def test_trickling_clients_are_dropped_and_healthz_answers(run_async: Runner) -> None:
    """Slowloris: clients sending one byte at a time are cut off at the head deadline, and
    /healthz answers while they trickle."""
    head = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 400

    async def trickle(port: int, started: asyncio.Event) -> bool:
        """True when the server hung up before this client finished its request."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started.set()
        try:
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        if await reader.read(1) == b"":
                            return True
            return False  # sent the whole head (8 s of trickle) without being cut off
        except ConnectionError:
            return True
        finally:
            writer.close()

    async def scenario() -> None:
        async with OpsServer("127.0.0.1", 0, head_timeout_s=0.5) as server:
            started = [asyncio.Event() for _ in range(20)]
            tricklers = [asyncio.create_task(trickle(server.port, event)) for event in started]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 10)
            await accepted(server, 20)
            assert (await fetch(server.port, "/healthz"))[:1] == (200,)
            async with asyncio.timeout(20):
                cut_off = await asyncio.gather(*tricklers)
            assert all(cut_off)

    run_async(scenario())


def test_busy_status_pages_do_not_hold_up_healthz(run_async: Runner) -> None:
    """With every /status slot taken by a slow callback, /status is 503 busy and /healthz 200."""
    release = asyncio.Event()

    async def slow_status() -> Mapping[str, Any]:
        await release.wait()
        return {"late": True}

    async def scenario() -> None:
        server = OpsServer("127.0.0.1", 0, status=slow_status, max_busy=2)
        async with server:
            slow = [asyncio.create_task(fetch(server.port, "/status")) for _ in range(2)]
            async with asyncio.timeout(10):
                while server.busy < 2:  # noqa: ASYNC110 - a count to poll, under a timeout
                    await asyncio.sleep(0.005)
            status, _, body = await fetch(server.port, "/status")
            assert (status, body) == (503, b"busy\n")
            assert (await fetch(server.port, "/healthz"))[:1] == (200,)
            release.set()
            assert [(await task)[0] for task in slow] == [200, 200]

    run_async(scenario())


@pytest.mark.kernel
def test_real_daemon_healthz_answers_beside_200_idle_connections(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """A real `pressured run --dry-run`: 16, then 200 idle local connections, /healthz is 200."""
    config = write_config(tmp_path / "p.toml", scope_config(scratch.path, scratch.memcg_path))
    with Daemon(config, "--dry-run") as daemon:
        url = daemon.wait_for("ops.listening", 60)["url"]
        daemon.wait_for("controller.ready", 60)
        port = int(url.rsplit(":", 1)[1])
        idle: list[socket.socket] = []
        try:
            for total in (16, 200):
                while len(idle) < total:
                    idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:  # noqa: S310 - loopback
                    assert (response.status, response.read()) == (200, b"ok\n")
        finally:
            for connection in idle:
                connection.close()
