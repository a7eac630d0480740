"""Opening the kill journal's file safely: the one open the daemon's start-up check and the
journal itself both use, so a path the start-up check accepts is a path the journal opens.

Nothing here imports aiofiles or structlog: the check runs before the triggers are armed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pressured.safety import resolve_trusted

__all__ = ["UnsafeJournalError", "open_journal_fd"]

_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
_FILE_MODE = 0o600  # records carry command lines and cgroup paths: root's eyes only
_DIR_MODE = 0o750


class UnsafeJournalError(PermissionError):
    """The journal path is within another user's reach; ``strerror`` says how."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(errno.EPERM, f"refusing journal {path}: {reason}", str(path))


def open_journal_fd(path: Path) -> tuple[int, bool]:
    """Open (create, 0600) the journal at ``path`` for appending, refusing anything another
    user could have placed or could change; return the fd and whether the file ends in a torn
    line. Blocking: run it on the executor."""
    directory = path.parent
    # Check before creating, so nothing is made inside someone else's directory.
    existing = directory
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    _check_directory(path, existing)
    directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    real_directory = _check_directory(path, directory)
    dir_fd = os.open(real_directory, _DIR_FLAGS)
    try:
        fd = os.open(path.name, _OPEN_FLAGS, _FILE_MODE, dir_fd=dir_fd)
    except OSError as exc:
        # O_NOFOLLOW makes a link at the path ELOOP; a link another user owns in a sticky
        # directory is EACCES before that (O_CREAT there checks the entry's owner first).
        if exc.errno not in (errno.ELOOP, errno.EACCES):
            raise
        reason = _planted_reason(path.name, dir_fd)
        if reason is None:
            raise
        raise UnsafeJournalError(path, reason) from None
    finally:
        os.close(dir_fd)
    try:
        info = os.fstat(fd)
        reason = _file_reason(info)
        if reason is not None:
            raise UnsafeJournalError(path, reason)
        torn = info.st_size > 0 and os.pread(fd, 1, info.st_size - 1) != b"\n"
    except BaseException:
        os.close(fd)
        raise
    return fd, torn


def _planted_reason(name: str, dir_fd: int) -> str | None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return "it is a symbolic link (give the real path)"
    return _file_reason(info)


def _check_directory(path: Path, directory: Path) -> str:
    outcome = resolve_trusted(directory, sticky_dir_at_end=True)
    if outcome.reason is not None or outcome.real_path is None:
        raise UnsafeJournalError(path, str(outcome.reason))
    return outcome.real_path


def _file_reason(info: os.stat_result) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_uid not in (0, os.geteuid()):
        return f"the file is owned by uid {info.st_uid}"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"the file is writable by group or others (mode {stat.filemode(info.st_mode)})"
    if info.st_nlink != 1:
        return f"the file has {info.st_nlink} hard links"
    return None
