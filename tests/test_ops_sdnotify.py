"""sd_notify over a real unix datagram socket (path and abstract), and the watchdog interval."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from pressured.ops.sdnotify import Notifier, notify, run_watchdog, watchdog_interval

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd, and its NOTIFY_SOCKET value."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def test_ready_watchdog_stopping_arrive(receiver: tuple[socket.socket, str]) -> None:
    """READY=1, WATCHDOG=1 and STOPPING=1 arrive as datagrams on NOTIFY_SOCKET."""
    sock, path = receiver
    with Notifier.from_env({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert notifier.ready(status="watching 1 scope")
        assert notifier.watchdog()
        assert notifier.stopping()
    assert sock.recv(4096) == b"READY=1\nSTATUS=watching 1 scope"
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert sock.recv(4096) == b"STOPPING=1"


def test_one_shot_notify(receiver: tuple[socket.socket, str]) -> None:
    """notify() opens, sends and closes in one call."""
    sock, path = receiver
    assert notify("STATUS=reloading", environ={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"STATUS=reloading"


def test_abstract_namespace() -> None:
    """'@name' addresses the abstract namespace."""
    name = f"pressured-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        assert notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_noop_without_socket() -> None:
    """Without NOTIFY_SOCKET every call is a no-op returning False."""
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notify("READY=1", environ={})


def test_send_failure_is_not_raised(tmp_path: Path) -> None:
    """A socket path nobody listens on makes notify() return False, not raise."""
    assert not notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})


def test_unset_removes_the_variable(receiver: tuple[socket.socket, str]) -> None:
    """from_env(unset=True) keeps the address but hides it from child processes."""
    _sock, path = receiver
    os.environ["NOTIFY_SOCKET"] = path
    try:
        notifier = Notifier.from_env(unset=True)
    finally:
        leaked = os.environ.pop("NOTIFY_SOCKET", None)
    assert leaked is None
    assert notifier.enabled
    notifier.close()


def test_watchdog_interval_is_half() -> None:
    """The ping interval is half of WATCHDOG_USEC, None when unset, foreign or malformed."""
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    own = {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(own) == 1.5
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_run_watchdog_pings_while_healthy(
    receiver: tuple[socket.socket, str], run_async: Runner
) -> None:
    """run_watchdog pings at its interval while healthy and withholds pings when not."""
    sock, path = receiver
    sock.setblocking(False)
    state = {"healthy": True}

    async def health() -> tuple[bool, str]:
        return state["healthy"], "reaper stuck"

    async def scenario() -> list[bytes]:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
        task = asyncio.create_task(run_watchdog(notifier, 0.02, health))
        received: list[bytes] = []
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            received.append(await loop.sock_recv(sock, 64))
            received.append(await loop.sock_recv(sock, 64))
        state["healthy"] = False
        await asyncio.sleep(0.1)
        while True:  # drain pings sent before the change
            try:
                sock.recv(64)
            except BlockingIOError:
                break
        await asyncio.sleep(0.1)
        with pytest.raises(BlockingIOError):
            sock.recv(64)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        notifier.close()
        return received

    assert run_async(scenario()) == [b"WATCHDOG=1", b"WATCHDOG=1"]
