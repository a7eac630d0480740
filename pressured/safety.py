"""Files that run with root's rights, or receive root's writes, must be out of other users' reach.

The rule, applied to every path pressured trusts (configuration, policy plugins, hook programs,
the kill journal's directory):

- The path is resolved one component at a time, the way the kernel does, so every symbolic
  link on the way is seen and followed by hand. Each entry met (directories, links, the final
  file) must be owned by root or by us: whoever owns an entry can change it, and in a sticky
  directory the owner of a link or file can also replace it.
- No entry may be writable by group or others, with two exceptions. A sticky directory
  (``/tmp``) on the way is fine: the kernel lets only an entry's owner (checked above) remove
  or rename it there. And an entry on a read-only mount cannot be written at all, whatever its
  mode says, so its mode is not held against it; that is how kubelet mounts a ConfigMap
  (``config.toml -> ..data/config.toml``, ``..data -> ..2026_11_30_...``, directories that may
  be 0777). This exception does not apply when the same filesystem is also mounted writable
  in our mount namespace: the read-only view would then be a window onto something others may
  still change.

Checking the real path, not the name given, is the point: ``/etc/pressured/hook`` linking to a
file in a user's home directory is that user's program, run as root.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from dataclasses import dataclass

from pressured.errors import UnsafeFileError

__all__ = [
    "TrustedPath",
    "check_not_world_writable",
    "resolve_trusted",
    "trusted_real_path",
    "unsafe_reason",
]

MOUNTINFO = "/proc/self/mountinfo"
_MAX_LINKS = 40  # the kernel's own limit (MAXSYMLINKS) on links followed in one lookup


@dataclass(frozen=True, slots=True)
class TrustedPath:
    """The outcome of :func:`resolve_trusted`: where ``path`` really leads, or why not trusted."""

    path: str
    """The path as given."""
    real_path: str | None
    """The real path (no symbolic links), when resolution got that far."""
    reason: str | None
    """Why the path must not be trusted, or None when it may be."""


def resolve_trusted(
    path: str | os.PathLike[str],
    *,
    sticky_dir_at_end: bool = False,
    mountinfo: str = MOUNTINFO,
) -> TrustedPath:
    """Resolve ``path`` by hand and check every entry on the way (see the module docstring).

    ``sticky_dir_at_end``: accept a sticky world-writable directory as the final entry (a
    journal directory like ``/var/tmp``, where the caller then checks the file it opens
    itself). A package or plugin directory must not be one: others could add files to it.
    """
    given = os.fspath(path)
    # Not os.path.abspath: it folds "a/../b" by text, which is wrong when "a" is a link.
    joined = given if given.startswith("/") else os.path.join(os.getcwd(), given)
    pending = deque(part for part in joined.split("/") if part)
    mounts = _MountView(mountinfo)
    me = os.geteuid()
    current = "/"
    reason = _entry_reason("/", os.lstat("/"), me, mounts, last=not pending, sticky_at_end=False)
    links = 0
    while reason is None and pending:
        name = pending.popleft()
        if name == ".":
            continue
        if name == "..":
            current = os.path.dirname(current)  # current has no links in it: plain text is right
            continue
        candidate = os.path.join(current, name)
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            return TrustedPath(given, None, f"{candidate} does not exist")
        except NotADirectoryError:
            return TrustedPath(given, None, f"{current} is not a directory")
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_LINKS:
                return TrustedPath(given, None, f"{given}: too many levels of symbolic links")
            # The link's directory was checked already; the link's owner could replace it in
            # a sticky directory, so it must be one of us too.
            reason = _owner_reason(candidate, info, me)
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            pending.extendleft(reversed([part for part in target.split("/") if part]))
            continue
        last = not pending
        reason = _entry_reason(
            candidate, info, me, mounts, last=last, sticky_at_end=sticky_dir_at_end
        )
        current = candidate
    return TrustedPath(given, current if reason is None else None, reason)


def unsafe_reason(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is unsafe to load or run as root, or None (see :func:`resolve_trusted`)."""
    return resolve_trusted(path).reason


def trusted_real_path(path: str | os.PathLike[str], *, what: str) -> str:
    """The real path of ``path``; raises UnsafeFileError naming ``what`` when it is unsafe."""
    outcome = resolve_trusted(path)
    if outcome.reason is not None or outcome.real_path is None:
        raise UnsafeFileError(f"{what} {os.fspath(path)}: {outcome.reason}")
    return outcome.real_path


def check_not_world_writable(path: str | os.PathLike[str], *, what: str) -> None:
    trusted_real_path(path, what=what)


# -- one entry ----------------------------------------------------------------------------------


def _owner_reason(path: str, info: os.stat_result, me: int) -> str | None:
    if info.st_uid in (0, me):
        return None
    return f"{path} is owned by uid {info.st_uid}"


def _entry_reason(
    path: str,
    info: os.stat_result,
    me: int,
    mounts: _MountView,
    *,
    last: bool,
    sticky_at_end: bool,
) -> str | None:
    owner = _owner_reason(path, info, me)
    if owner is not None:
        return owner
    if not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    is_dir = stat.S_ISDIR(info.st_mode)
    if is_dir and info.st_mode & stat.S_ISVTX and (not last or sticky_at_end):
        return None
    writable = f"{path} is writable by group or others (mode {stat.filemode(info.st_mode)})"
    read_only = mounts.read_only_reason(path, info)
    if read_only is None:
        return None  # nobody can write it, whatever the mode says
    return f"{writable}{read_only}"


class _MountView:
    """Answers "can anyone write this entry's filesystem?" from statvfs and mountinfo."""

    def __init__(self, mountinfo: str) -> None:
        self._mountinfo = mountinfo
        self._writable: dict[int, str] | None = None

    def read_only_reason(self, path: str, info: os.stat_result) -> str | None:
        """None when ``path`` is on a read-only mount and its filesystem is mounted nowhere
        writable in our namespace; otherwise the words to add to the refusal."""
        try:
            flags = os.statvfs(path).f_flag
        except OSError:
            return ""
        if not flags & os.ST_RDONLY:
            return ""
        elsewhere = self._writable_mounts().get(info.st_dev)
        if elsewhere is None:
            return None
        return f", and its read-only filesystem is also mounted writable at {elsewhere}"

    def _writable_mounts(self) -> dict[int, str]:
        """``st_dev -> mount point`` of every read-write mount (first one per device)."""
        if self._writable is None:
            self._writable = {}
            try:
                with open(self._mountinfo, encoding="utf-8", errors="replace") as handle:
                    lines = handle.readlines()
            except OSError:
                lines = []
            for line in lines:
                # "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=..."
                fields = line.split()
                if len(fields) < 6:
                    continue
                major, _, minor = fields[2].partition(":")
                if "rw" not in fields[5].split(","):
                    continue
                device = os.makedev(int(major), int(minor))
                mount_point = fields[4].replace("\\040", " ")
                self._writable.setdefault(device, mount_point)
        return self._writable
