"""Files that run with root's rights must not be writable by anyone else."""

from __future__ import annotations

import os
import stat

from pressured.errors import UnsafeFileError


def unsafe_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` (or a directory above it) is unsafe to load as root, or None.

    Unsafe: writable by group or others, or owned by a user other than root or us. Every
    directory up to ``/`` is checked too, since whoever can write a parent can swap the file.
    Sticky world-writable directories (``/tmp``) are accepted for parents, as the kernel
    stops others from replacing files they do not own there.
    """
    me = os.geteuid()
    current = os.path.abspath(path)
    first = True
    while True:
        try:
            info = os.stat(current)
        except FileNotFoundError:
            return f"{current} does not exist"
        if info.st_uid not in (0, me):
            return f"{current} is owned by uid {info.st_uid}"
        writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky_dir = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
        if writable_by_others and (first or not sticky_dir):
            return f"{current} is writable by group or others (mode {stat.filemode(info.st_mode)})"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current, first = parent, False


def check_not_world_writable(path: str | os.PathLike[str], *, what: str) -> None:
    reason = unsafe_reason(path)
    if reason is not None:
        raise UnsafeFileError(f"{what} {path}: {reason}")
