"""The kill journal: one JSON line per kill record, durable before the next kill.

Why a file of our own besides the logs: logs rotate, get sampled and are shipped elsewhere;
the journal is the local, complete answer to "what did pressured kill, when and why", read by
``pressured log``. Each record is written with one ``write(2)`` on an ``O_APPEND`` descriptor
and ``fsync``'d before :meth:`KillJournal.append` returns, on an executor the caller owns (the
loop never waits on the disk, and no thread is created under pressure).

Reading tolerates a torn last line (a crash mid-write): :func:`read_journal` skips any line
that is not a complete JSON object, and the writer starts a fresh line when it finds the file
not ending in a newline, so one torn record never corrupts the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import structlog

from pressured.events import KillRecord, PressureEvent

__all__ = ["KillJournal", "read_journal"]

log = structlog.get_logger("pressured.ops.journal")

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
_FILE_MODE = 0o600  # records carry command lines and cgroup paths: root's eyes only
_DIR_MODE = 0o750
_READ_BLOCK = 64 * 1024


class KillJournal:
    """Appends kill records to ``path``. Also a :class:`~pressured.ops.Sink`.

    ``executor`` runs the blocking open/write/fsync (pass the controller's I/O pool).
    ``on_error`` is called once per record that could not be written (wire it to
    :meth:`~pressured.ops.metrics.Metrics.journal_failed`). Failures are logged as
    ``journal.write_failed`` and never raised from :meth:`on_kill`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        executor: Executor,
        *,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._executor = executor
        self._on_error = on_error
        self._fd: int | None = None
        self._needs_newline = False
        # Serialises appends so lines land in the order kills happened, whatever the pool size.
        self._lock = asyncio.Lock()
        self.written = 0
        self.failures = 0

    # -- Sink -------------------------------------------------------------------------------

    async def on_pressure(self, event: PressureEvent) -> None:
        """Pressure events are not journaled (the logs have them)."""

    async def on_kill(self, record: KillRecord) -> None:
        await self.append(record)

    async def aclose(self) -> None:
        async with self._lock:
            await self._run(self._close_sync)

    # -- public API -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (and create, mode 0600) the journal now, so a bad path shows at start-up.

        Raises OSError: an unwritable journal is a configuration problem the operator must
        see; later write failures are only logged and counted.
        """
        async with self._lock:
            await self._run(self._open_sync)

    async def append(self, record: KillRecord) -> bool:
        """Write one record durably; True on success, False (logged, counted) on failure."""
        line = (json.dumps(record.to_dict(), default=str, separators=(",", ":")) + "\n").encode()
        async with self._lock:
            try:
                await self._run(self._append_sync, line)
            except OSError as exc:
                self.failures += 1
                log.exception(
                    "journal.write_failed",
                    path=str(self.path),
                    error=exc.strerror or repr(exc),
                    target=record.target,
                )
                if self._on_error is not None:
                    self._on_error()
                return False
        self.written += 1
        return True

    async def reopen(self) -> None:
        """Close and reopen the file (after log rotation; call it on SIGHUP)."""
        async with self._lock:
            await self._run(self._close_sync)
            try:
                await self._run(self._open_sync)
            except OSError as exc:
                # The next append retries the open; a reload must not fail for this.
                log.exception("journal.reopen_failed", path=str(self.path), error=exc.strerror)

    # -- blocking parts, run on the executor ------------------------------------------------

    async def _run(self, func: Callable[..., None], *args: Any) -> None:
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, context.run, func, *args)

    def _open_sync(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path, _OPEN_FLAGS, _FILE_MODE)
        try:
            size = os.fstat(fd).st_size
            # A crash mid-write left a torn line: start ours on a fresh line.
            self._needs_newline = size > 0 and _last_byte(self.path, size) != b"\n"
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def _append_sync(self, line: bytes) -> None:
        self._open_sync()
        assert self._fd is not None  # noqa: S101 -- set by _open_sync or it raised
        data = (b"\n" + line) if self._needs_newline else line
        try:
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError:
            # Whatever part got written is a torn line now; the next record starts afresh.
            self._needs_newline = True
            raise
        self._needs_newline = False

    def _close_sync(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(size - 1)
        return handle.read(1)


def read_journal(path: str | os.PathLike[str], last_n: int | None = None) -> list[dict[str, Any]]:
    """The last ``last_n`` records (all when None), oldest first.

    Reads backwards from the end in blocks, so a journal of a million kills costs what its
    tail costs. Lines that are not a complete JSON object (a torn last line, a stray edit) are
    skipped. Raises FileNotFoundError if there is no journal.
    """
    if last_n is not None and last_n <= 0:
        return []
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        position = end
        chunks: list[bytes] = []
        newlines = 0
        # One more line than asked: the first (partial) line of the block is dropped.
        while position > 0 and (last_n is None or newlines <= last_n):
            step = min(_READ_BLOCK, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    lines = data.split(b"\n")
    if position > 0:
        lines = lines[1:]  # began mid-line
    records: list[dict[str, Any]] = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if isinstance(item, dict):
            records.append(item)
    return records if last_n is None else records[-last_n:]
