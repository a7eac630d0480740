"""systemd's ``sd_notify`` protocol in pure Python: readiness, watchdog pings, status.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Without that variable
(not started by systemd with ``Type=notify``) everything here is a cheap no-op, so the
controller calls it unconditionally.

The socket is opened once, up front (:meth:`Notifier.from_env`), and sends never block: a
watchdog ping must not be the thing that stalls the loop when the host is short of memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
from collections.abc import Awaitable, Callable, Mapping

import structlog

__all__ = ["Notifier", "notify", "run_watchdog", "watchdog_interval"]

log = structlog.get_logger("pressured.ops.sdnotify")


def _address(raw: str) -> str | bytes | None:
    if raw.startswith("@"):
        # Abstract namespace: a leading NUL instead of '@'; no filesystem entry.
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # vsock and other forms are not for us


class Notifier:
    """A connected ``$NOTIFY_SOCKET`` sender; ``notify()`` is a no-op when there is none."""

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address is None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        self._sock = sock

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, unset: bool = False) -> Notifier:
        """Read ``$NOTIFY_SOCKET``; ``unset=True`` removes it from ``os.environ`` so child
        processes (hooks) cannot speak for us."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        if unset and environ is None:
            os.environ.pop("NOTIFY_SOCKET", None)
        address = _address(raw) if raw else None
        if raw and address is None:
            log.warning("sdnotify.unsupported_socket", socket=raw)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *states: str) -> bool:
        """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) as one datagram.

        Returns True if sent; False when disabled or the send failed (logged, never raised:
        systemd going away must not take the daemon with it).
        """
        if self._sock is None or self.address is None or not states:
            return False
        message = "\n".join(states).encode()
        try:
            self._sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("sdnotify.send_failed", error=exc.strerror or repr(exc), states=states)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *((f"STATUS={status}",) if status else ()))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *((f"STATUS={status}",) if status else ()))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def notify(*states: str, environ: Mapping[str, str] | None = None) -> bool:
    """One-shot ``sd_notify``: opens, sends and closes. Prefer a long-lived :class:`Notifier`
    in the daemon (no socket allocated per ping)."""
    with Notifier.from_env(environ) as notifier:
        return notifier.notify(*states)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as systemd advises.

    None when no watchdog is configured, the value is malformed, or ``$WATCHDOG_PID`` names
    another process (the watchdog is meant for someone else).
    """
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("sdnotify.bad_watchdog_usec", value=raw)
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


async def run_watchdog(
    notifier: Notifier,
    interval_s: float,
    health: Callable[[], tuple[bool, str] | Awaitable[tuple[bool, str]]] | None = None,
) -> None:
    """Send ``WATCHDOG=1`` every ``interval_s`` until cancelled, while ``health`` says so.

    Run it as a task in the controller's task group. The ping comes from the event loop, so a
    stuck loop stops it; ``health`` (plain or async, e.g. ``Controller.health``) lets a stuck
    reaper thread stop it too, and systemd then restarts the service. A withheld ping is
    logged once per change (``sdnotify.watchdog_withheld``), not every interval.
    """
    withheld = False
    while True:
        healthy, reason = True, "ok"
        if health is not None:
            try:
                result = health()
                if inspect.isawaitable(result):
                    async with asyncio.timeout(interval_s):
                        result = await result
                healthy, reason = result
            except Exception as exc:  # a broken check must not kill the ping task
                healthy, reason = False, f"health check raised {exc!r}"
        if healthy:
            notifier.watchdog()
            if withheld:
                log.info("sdnotify.watchdog_resumed")
        elif not withheld:
            log.warning("sdnotify.watchdog_withheld", reason=reason)
        withheld = not healthy
        await asyncio.sleep(interval_s)
