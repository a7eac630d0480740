"""Cheap checks of the operations settings, made before any trigger is armed.

The daemon arms its triggers before it imports and starts what is not needed to act (HTTP
endpoints, metrics, the kill journal, hooks): a daemon restarted in the middle of a memory
crisis must react first. A busy port or an unwritable journal is still a configuration error
that must stop the daemon before anything starts, so these checks do the part that can fail
(bind the port, create the journal file) with a handful of system calls and no heavy import;
the servers and writers built on them start right after arming.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pressured.errors import ConfigError
from pressured.ops.journalfile import UnsafeJournalError, open_journal_fd

__all__ = ["check_journal_path", "reserve_port"]

LISTEN_BACKLOG = 100


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` now; the HTTP server takes the socket over later.

    Holding the bound socket (rather than probing and closing it) means nobody can take the
    port between the check and the server start. Raises :class:`ConfigError` for
    ``metrics.port`` (busy, not allowed) or ``metrics.host`` (not an address of this host).
    """
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as exc:
        raise ConfigError("metrics.host", f"cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
    try:
        # As asyncio.start_server does: a restarted daemon must not wait for TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "metrics.port", f"cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    return sock


def check_journal_path(path: str | os.PathLike[str]) -> None:
    """Open the journal's file exactly as the journal will (create it 0600, refuse a path within
    another user's reach), then close it: a path accepted here is one the journal can use.

    Only opens and closes (and reads the last byte of a non-empty file): no disk read to speak
    of under pressure. Raises :class:`ConfigError` for ``journal.path``.
    """
    try:
        fd, _torn = open_journal_fd(Path(path))
    except OSError as exc:
        reason = (
            exc.strerror
            if isinstance(exc, UnsafeJournalError)
            else f"cannot open {path}: {exc.strerror}"
        )
        raise ConfigError("journal.path", str(reason)) from None
    os.close(fd)
