"""The kill journal: one JSON line per kill record, durable before the next kill.

Why a file of our own besides the logs: logs rotate, get sampled and are shipped elsewhere;
the journal is the local, complete answer to "what did pressured kill, when and why", read by
``pressured log``. Each record is written on an ``O_APPEND`` descriptor and ``fsync``'d before
:meth:`KillJournal.append` returns. The I/O goes through aiofiles on an executor the caller
owns (the daemon's one "pressured-ops" thread): the loop never waits on the disk, and no
thread is created under pressure (aiofiles would otherwise use the loop's default pool).

Root writes this file, so nobody else may choose what it writes into. Every open (start-up
and each reopen after rotation) resolves the directory with :mod:`pressured.safety` (owned by
root or us, not writable by others unless sticky), opens the file with ``O_NOFOLLOW`` relative
to that directory (a link planted at the path is refused, not followed), and checks the file
it got: a regular file with one link, owned by root or us, writable by nobody else. A file
another user planted in a sticky directory is refused rather than written into.

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
from typing import Any, TypeVar

import aiofiles
import structlog
from aiofiles.threadpool.binary import AsyncFileIO

from pressured.events import KillRecord, PressureEvent
from pressured.ops.journalfile import UnsafeJournalError, open_journal_fd

__all__ = ["KillJournal", "UnsafeJournalError", "read_journal", "read_journal_async"]

log = structlog.get_logger("pressured.ops.journal")

_T = TypeVar("_T")
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
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
        self._file: AsyncFileIO | None = None
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
            await self._close()

    # -- public API -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (and create, mode 0600) the journal now, so a bad path shows at start-up.

        Raises OSError (:class:`UnsafeJournalError` when the path is within another user's
        reach): an unwritable journal is a configuration problem the operator must see; later
        write failures are only logged and counted.
        """
        async with self._lock:
            await self._open()

    async def append(self, record: KillRecord) -> bool:
        """Write one record durably; True on success, False (logged, counted) on failure."""
        line = (json.dumps(record.to_dict(), default=str, separators=(",", ":")) + "\n").encode()
        async with self._lock:
            try:
                await self._append(line)
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
            await self._close()
            try:
                await self._open()
            except OSError as exc:
                # The next append retries the open; a reload must not fail for this.
                log.exception("journal.reopen_failed", path=str(self.path), error=exc.strerror)

    # -- I/O, all of it on the executor ---------------------------------------------------

    async def _run(self, func: Callable[..., _T], *args: Any) -> _T:
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, context.run, func, *args)

    async def _open(self) -> None:
        if self._file is not None:
            return
        fd, self._needs_newline = await self._run(open_journal_fd, self.path)
        try:
            # Unbuffered: each write() is one write(2) on the O_APPEND descriptor.
            self._file = await aiofiles.open(
                fd, "ab", buffering=0, closefd=True, executor=self._executor
            )
        except BaseException:
            os.close(fd)
            raise

    async def _append(self, line: bytes) -> None:
        await self._open()
        assert self._file is not None  # noqa: S101 -- set by _open or it raised
        data = (b"\n" + line) if self._needs_newline else line
        try:
            view = memoryview(data)
            while view:
                written = await self._file.write(view)
                view = view[written:]
            await self._run(os.fsync, self._file.fileno())
        except OSError:
            # Whatever part got written is a torn line now; the next record starts afresh.
            self._needs_newline = True
            raise
        self._needs_newline = False

    async def _close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                await file.close()


def read_journal(path: str | os.PathLike[str], last_n: int | None = None) -> list[dict[str, Any]]:
    """The last ``last_n`` records (all when None), oldest first.

    Reads backwards from the end in blocks, so a journal of a million kills costs what its
    tail costs. Lines that are not a complete JSON object (a torn last line, a stray edit) are
    skipped. Raises FileNotFoundError if there is no journal, OSError (ELOOP) if the path is
    a symbolic link.
    """
    if last_n is not None and last_n <= 0:
        return []
    with open(path, "rb", opener=_open_no_follow) as handle:
        tail = _Tail(handle.seek(0, os.SEEK_END), last_n)
        while (step := tail.next_step()) is not None:
            handle.seek(tail.position)
            tail.add(handle.read(step))
    return tail.records()


async def read_journal_async(
    path: str | os.PathLike[str], last_n: int | None, executor: Executor
) -> list[dict[str, Any]]:
    """:func:`read_journal` through aiofiles, every read on ``executor`` (no other thread)."""
    if last_n is not None and last_n <= 0:
        return []
    # Not "async with": aiofiles' context manager closes on the loop's default executor
    # whatever executor= says (aiofiles 25.1), which would start a thread of its own.
    handle = await aiofiles.open(path, "rb", opener=_open_no_follow, executor=executor)
    try:
        tail = _Tail(await handle.seek(0, os.SEEK_END), last_n)
        while (step := tail.next_step()) is not None:
            await handle.seek(tail.position)
            tail.add(await handle.read(step))
    finally:
        await handle.close()
    return tail.records()


def _open_no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


class _Tail:
    """The backwards block reading shared by both readers: which block next, and the records
    once enough newlines are in."""

    def __init__(self, end: int, last_n: int | None) -> None:
        self.position = end
        self._last_n = last_n
        self._chunks: list[bytes] = []
        self._newlines = 0

    def next_step(self) -> int | None:
        """The size of the block before :attr:`position` to read next, or None when done."""
        # One more line than asked: the first (partial) line of the block is dropped.
        if self.position <= 0 or (self._last_n is not None and self._newlines > self._last_n):
            return None
        step = min(_READ_BLOCK, self.position)
        self.position -= step
        return step

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._newlines += chunk.count(b"\n")

    def records(self) -> list[dict[str, Any]]:
        lines = b"".join(reversed(self._chunks)).split(b"\n")
        if self.position > 0:
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
        return records if self._last_n is None else records[-self._last_n :]
