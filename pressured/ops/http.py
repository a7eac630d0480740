"""A tiny HTTP/1.1 server for ``/metrics``, ``/healthz`` and ``/status``.

Built on :func:`asyncio.start_server` so it needs no dependency and runs on uvloop and the
stdlib loop alike. It is deliberately small and defensive, because it runs inside a daemon
that must stay responsive under memory pressure:

- one request per connection (``Connection: close``), ``GET`` and ``HEAD`` only;
- the request head is bounded (8 KiB) and must arrive whole within ``head_timeout_s`` (1 s):
  a client that sends nothing, or trickles a byte at a time, is dropped at that deadline;
- connections are capped per client address and in total, and the cap is enforced by
  dropping the oldest connection that has not sent its request yet, never by refusing the
  newcomer: a liveness probe sends its request at once, so idle connections opened by another
  local user (same address as the probe on loopback) cannot keep ``/healthz`` from answering;
- ``/metrics`` and ``/status`` (which cost work) are served ``max_busy`` at a time, more get
  503; ``/healthz`` is always answered;
- callbacks that raise become 500 (or 503 for ``/healthz``), never a crashed server.

Bound to 127.0.0.1 by default; inside a Kubernetes pod the kubelet's probes come from outside
the pod's loopback, so there the configuration binds 0.0.0.0 (see examples/kubernetes).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import json
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pressured.ops.metrics import Metrics

__all__ = ["HealthCheck", "OpsServer", "StatusProvider"]

log = structlog.get_logger("pressured.ops.http")

HealthCheck = Callable[[], tuple[bool, str] | Awaitable[tuple[bool, str]]]
"""``() -> (healthy, reason)``, plain or ``async`` (e.g. ``Controller.health``), on the loop."""
StatusProvider = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]
"""``() -> JSON-serialisable mapping``, plain or ``async``, called on the loop thread."""

_T = TypeVar("_T")
MAX_HEAD_BYTES = 8192
_ROUTES = ("/metrics", "/healthz", "/status")
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"


class OpsServer:
    """Serves the operations endpoints; ``await start()``, then ``await aclose()``.

    ``port=0`` binds a free port; read it back from :attr:`port` after ``start()``.
    ``executor``, when given, renders ``/metrics`` off the loop thread: rendering calls the
    pressure readers and reads ``/proc/self/statm``, and the loop must never wait on a file.

    Limits: the request head within ``head_timeout_s``; callbacks and the answer's write
    within ``request_timeout_s``; ``max_per_client`` connections per peer address and
    ``max_connections`` in all (made room for by dropping the oldest idle one, see the module
    docstring); ``max_busy`` ``/metrics`` or ``/status`` answers at once. :attr:`dropped`
    counts connections dropped for room.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 19464,
        *,
        metrics: Metrics | None = None,
        health: HealthCheck | None = None,
        status: StatusProvider | None = None,
        executor: Executor | None = None,
        request_timeout_s: float = 5.0,
        head_timeout_s: float = 1.0,
        max_connections: int = 64,
        max_per_client: int = 8,
        max_busy: int = 4,
    ) -> None:
        self.host = host
        self.port = port
        self._metrics = metrics
        self._health = health
        self._status = status
        self._executor = executor
        self._timeout = request_timeout_s
        self._head_timeout = head_timeout_s
        self._max_connections = max(1, max_connections)
        self._max_per_client = max(1, max_per_client)
        self._max_busy = max(1, max_busy)
        self._busy = 0
        self._server: asyncio.Server | None = None
        # Open connections in arrival order (dicts keep it), so the oldest is found first.
        self._connections: dict[asyncio.StreamWriter, _Connection] = {}
        self.dropped = 0
        """Connections dropped to make room (idle or trickling clients over a cap)."""

    @property
    def open_connections(self) -> int:
        """Connections open now (not counting those dropped and still being cleaned up)."""
        return sum(not connection.dropped for connection in self._connections.values())

    @property
    def busy(self) -> int:
        """``/metrics`` and ``/status`` requests being answered now."""
        return self._busy

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> None:
        """Bind and listen; raises OSError if the address is taken (a configuration error the
        operator must see at start-up, not a silent gap in monitoring).

        ``sock``: an already bound and listening socket to serve on instead (the daemon binds
        before arming its triggers and starts the server after).
        """
        if sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=sock, limit=MAX_HEAD_BYTES)
        else:
            self._server = await asyncio.start_server(
                self._handle, self.host, self.port, limit=MAX_HEAD_BYTES, reuse_address=True
            )
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("http.listening", url=self.url)

    async def aclose(self) -> None:
        """Stop listening, drop open connections, wait for the listener to close."""
        server, self._server = self._server, None
        if server is None:
            return
        # 1. Stop accepting new connections.
        server.close()
        # 2. Close connections still open (a slow client must not hold up shutdown).
        for writer in list(self._connections):
            writer.close()
        # 3. Wait for the listening socket to go away.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                await server.wait_closed()

    async def __aenter__(self) -> OpsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- request handling -------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(_client_of(writer))
        self._make_room(connection.client)
        self._connections[writer] = connection
        try:
            await self._serve_one(reader, writer, connection)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away, was too slow, or was dropped for room
        except Exception:
            log.exception("http.handler_failed")
        finally:
            del self._connections[writer]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _make_room(self, client: str) -> None:
        """Drop connections still waiting for their request until the newcomer fits under both
        caps: first from its own address, then from the address holding the most."""
        # Dropped ones stay listed until their handler has cleaned up: do not count them.
        live = [c for c in self._connections.values() if not c.dropped]
        if sum(c.client == client for c in live) >= self._max_per_client:
            self._drop_oldest_waiting(client)
            live = [c for c in live if not c.dropped]
        if len(live) >= self._max_connections:
            counts = Counter(c.client for c in live if c.waiting)
            for busiest, _count in counts.most_common():
                if self._drop_oldest_waiting(busiest):
                    break

    def _drop_oldest_waiting(self, client: str) -> bool:
        for writer, connection in self._connections.items():
            if connection.client == client and connection.waiting and not connection.dropped:
                connection.dropped = True
                self.dropped += 1
                log.debug("http.dropped_idle", client=client)
                writer.transport.abort()  # its reader sees EOF; its handler cleans up
                return True
        return False

    async def _serve_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        try:
            # One deadline for the whole head: a trickle of bytes does not extend it.
            async with asyncio.timeout(self._head_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            await self._respond(
                writer, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"request too large\n", _TEXT
            )
            return
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return  # connected and closed without a request (a TCP probe)
            raise
        connection.waiting = False
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._respond(writer, HTTPStatus.BAD_REQUEST, b"bad request\n", _TEXT)
            return
        method, target, _version = parts
        path = target.split("?", 1)[0]
        if path not in _ROUTES:
            await self._respond(writer, HTTPStatus.NOT_FOUND, b"not found\n", _TEXT, method)
            return
        if method not in ("GET", "HEAD"):
            await self._respond(
                writer,
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"method not allowed\n",
                _TEXT,
                method,
                extra=(("Allow", "GET, HEAD"),),
            )
            return
        started = time.perf_counter()
        if path == "/healthz":
            status, body, content_type = await self._health_page()
        elif self._busy >= self._max_busy:
            status, body, content_type = HTTPStatus.SERVICE_UNAVAILABLE, b"busy\n", _TEXT
        else:
            self._busy += 1
            try:
                status, body, content_type = await self._route(path)
            finally:
                self._busy -= 1
        await self._respond(writer, status, body, content_type, method)
        log.debug(
            "http.request",
            path=path,
            status=int(status),
            ms=round((time.perf_counter() - started) * 1000, 3),
        )

    async def _route(self, path: str) -> tuple[HTTPStatus, bytes, str]:
        if path == "/metrics":
            return await self._metrics_page()
        return await self._status_page()

    async def _metrics_page(self) -> tuple[HTTPStatus, bytes, str]:
        if self._metrics is None:
            return HTTPStatus.NOT_FOUND, b"metrics disabled\n", _TEXT
        render = functools.partial(generate_latest, self._metrics.registry)
        try:
            if self._executor is None:
                body = render()
            else:
                body = await _in_executor(self._executor, render)
        except Exception as exc:
            log.exception("http.metrics_failed")
            return HTTPStatus.INTERNAL_SERVER_ERROR, f"{exc!r}\n".encode(), _TEXT
        return HTTPStatus.OK, body, CONTENT_TYPE_LATEST

    async def _health_page(self) -> tuple[HTTPStatus, bytes, str]:
        if self._health is None:
            return HTTPStatus.OK, b"ok\n", _TEXT
        try:
            healthy, reason = await _call(self._health, self._timeout)
        except TimeoutError:
            healthy, reason = False, f"health check did not answer within {self._timeout:g} s"
        except Exception as exc:
            log.exception("http.health_failed")
            healthy, reason = False, f"health check raised {exc!r}"
        if healthy:
            return HTTPStatus.OK, b"ok\n", _TEXT
        return HTTPStatus.SERVICE_UNAVAILABLE, f"{reason or 'unhealthy'}\n".encode(), _TEXT

    async def _status_page(self) -> tuple[HTTPStatus, bytes, str]:
        if self._status is None:
            return HTTPStatus.NOT_FOUND, b"status not available\n", _TEXT
        try:
            document = await _call(self._status, self._timeout)
            body = json.dumps(document, default=str, indent=2).encode() + b"\n"
        except Exception as exc:
            log.exception("http.status_failed")
            error = json.dumps({"error": repr(exc)}).encode() + b"\n"
            return HTTPStatus.INTERNAL_SERVER_ERROR, error, _JSON
        return HTTPStatus.OK, body, _JSON

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        method: str = "GET",
        *,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        headers = [
            f"HTTP/1.1 {int(status)} {status.phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *(f"{name}: {value}" for name, value in extra),
        ]
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            writer.write(body)
        async with asyncio.timeout(self._timeout):
            await writer.drain()


@dataclass(slots=True)
class _Connection:
    client: str
    """The peer's address (no port): the unit the per-client cap counts."""
    waiting: bool = True
    """Still waiting for the request head; only such connections are dropped for room."""
    dropped: bool = False


def _client_of(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


async def _call(func: Callable[[], _T | Awaitable[_T]], timeout_s: float) -> _T:
    """Call a plain or async callback; an async one is bounded by ``timeout_s``."""
    result = func()
    if inspect.isawaitable(result):
        async with asyncio.timeout(timeout_s):
            return await result
    return result


def _in_executor(executor: Executor, func: Callable[[], bytes]) -> Awaitable[bytes]:
    # Copy the context so log fields bound by the caller survive the thread hop.
    context = contextvars.copy_context()
    return asyncio.get_running_loop().run_in_executor(executor, context.run, func)
