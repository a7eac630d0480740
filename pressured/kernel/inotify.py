"""inotify(7) through ctypes, for one job: wait without polling until a directory exists.

A watched cgroup can be removed and made again (a service restarted, a pod recreated). The
kernel then reports the change on the parent directory: ``mkdir`` in cgroupfs raises
IN_CREATE there like on any file system (checked on this machine). :class:`PathWaiter` holds
one inotify fd watching the nearest existing ancestor of the path; its fd becomes readable
when something is created or moved there, and :meth:`PathWaiter.check` says whether the path
is back. The fd is a plain readable fd: asyncio's ``add_reader`` or ``poll()`` both work.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_mod
import os
import struct
from dataclasses import dataclass
from pathlib import Path

IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_ONLYDIR = 0x01000000

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


def _raise_errno(what: str, path: str | None = None) -> None:
    code = ctypes.get_errno()
    raise OSError(code, f"{what}: {os.strerror(code)}", path)


def inotify_init() -> int:
    """A new non-blocking, close-on-exec inotify fd."""
    fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        _raise_errno("inotify_init1")
    return int(fd)


def add_watch(fd: int, path: str | os.PathLike[str], mask: int) -> int:
    """Watch ``path``; the watch descriptor. Raises OSError (ENOENT when it is gone)."""
    text = os.fsdecode(path)
    wd = _libc.inotify_add_watch(fd, os.fsencode(text), mask)
    if wd < 0:
        _raise_errno("inotify_add_watch", text)
    return int(wd)


def rm_watch(fd: int, wd: int) -> None:
    """Remove a watch; a watch the kernel already dropped (EINVAL) is not an error."""
    if _libc.inotify_rm_watch(fd, wd) < 0 and ctypes.get_errno() != errno_mod.EINVAL:
        _raise_errno("inotify_rm_watch")


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    wd: int
    mask: int
    name: str


def read_events(fd: int) -> list[InotifyEvent]:
    """Every event queued on a non-blocking inotify fd (empty when none)."""
    events: list[InotifyEvent] = []
    while True:
        try:
            data = os.read(fd, 64 * 1024)
        except BlockingIOError:
            return events
        if not data:
            return events
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + length].split(b"\0", 1)[0]
            offset += length
            events.append(InotifyEvent(wd, mask, os.fsdecode(name)))


_WAIT_MASK = IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR


class PathWaiter:
    """Waits for the directory ``target`` to exist, by inotify on its nearest existing
    ancestor (moved deeper as each missing level appears, higher if that ancestor goes)."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target)
        self._fd = inotify_init()
        self._wd: int | None = None
        self._watched: Path | None = None

    def fileno(self) -> int:
        return self._fd

    @property
    def watched(self) -> Path | None:
        """The ancestor watched now (tests and logs)."""
        return self._watched

    def check(self) -> bool:
        """Consume pending events; True when ``target`` exists now, else aim the watch at the
        nearest existing ancestor and return False (the fd turns readable on a change)."""
        for event in read_events(self._fd):
            if event.mask & IN_IGNORED and event.wd == self._wd:
                # The watched ancestor itself went away: the kernel dropped the watch.
                self._wd = self._watched = None
        while not self.target.is_dir():
            ancestor = self._nearest_existing()
            if ancestor == self._watched:
                return False
            self._drop_watch()
            try:
                self._wd = add_watch(self._fd, ancestor, _WAIT_MASK)
            except (FileNotFoundError, NotADirectoryError):
                continue  # the ancestor went between the check and the watch: look again
            self._watched = ancestor
            # Drop what the move queued (IN_IGNORED for the old watch): stale, and the loop
            # checks the path again anyway, in case it appeared before the watch existed.
            read_events(self._fd)
        return True

    def _nearest_existing(self) -> Path:
        for candidate in self.target.parents:
            if candidate.is_dir():
                return candidate
        return Path("/")

    def _drop_watch(self) -> None:
        if self._wd is not None:
            with contextlib.suppress(OSError):
                rm_watch(self._fd, self._wd)
        self._wd = self._watched = None

    def close(self) -> None:
        """Idempotent."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
            self._wd = self._watched = None
