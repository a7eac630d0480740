"""One way to read a cgroup name a user typed, wherever a cgroup is named.

People copy cgroup names from three places, so all three are accepted and turned into the one
form pressured works with internally (the path inside the hierarchy, as ``/proc/PID/cgroup``
writes it: ``/jobs/batch``):

* a path relative to the cgroup2 mount: ``/jobs/batch`` or ``jobs/batch``;
* an absolute path under the mount, as a shell shows it: ``/sys/fs/cgroup/unified/jobs/batch``;
* a line of ``/proc/PID/cgroup``: ``0::/jobs/batch`` (``4:memory:/jobs`` for a v1 memcg).

Anything else (a path under another filesystem, ``..``, a v1 line where a v2 group is meant) is
refused with a message that lists the accepted forms. The mount points come from
``/proc/self/mountinfo``; when it cannot be read, the usual places are assumed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

Hierarchy = Literal["v2", "memory"]

# Where cgroup hierarchies are mounted when mountinfo cannot tell us (a check run off-host).
_FALLBACK_V2_MOUNTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")
_FALLBACK_MEMORY_MOUNTS = ("/sys/fs/cgroup/memory",)
# A path starting here names a file, never a cgroup: it must lie under a cgroup mount.
_FILESYSTEM_PREFIXES = ("/sys/", "/proc/", "/dev/", "/run/")
_PROC_CGROUP_LINE = re.compile(r"^(\d+):([^:]*):(.*)$")


class CgroupPathError(ValueError):
    """A cgroup name in none of the accepted forms; the message lists them."""


@dataclass(frozen=True, slots=True)
class CgroupMounts:
    """Mount points of the cgroup2 hierarchy and of the v1 memory hierarchy (hybrid hosts)."""

    v2: tuple[str, ...]
    memory_v1: tuple[str, ...]

    def for_hierarchy(self, hierarchy: Hierarchy) -> tuple[str, ...]:
        return self.v2 if hierarchy == "v2" else self.memory_v1


FALLBACK_MOUNTS = CgroupMounts(_FALLBACK_V2_MOUNTS, _FALLBACK_MEMORY_MOUNTS)


def accepted_forms(hierarchy: Hierarchy = "v2", mounts: CgroupMounts = FALLBACK_MOUNTS) -> str:
    """The sentence every refusal ends with."""
    mount = (mounts.for_hierarchy(hierarchy) or ("/sys/fs/cgroup",))[0]
    line = "0::/jobs" if hierarchy == "v2" else "4:memory:/jobs"
    return (
        f"accepted forms: a path relative to the cgroup mount ('/jobs' or 'jobs'), an "
        f"absolute path under the mount ('{mount}/jobs'), or a line of /proc/PID/cgroup "
        f"('{line}')"
    )


def _from_proc_line(text: str, hierarchy: Hierarchy, mounts: CgroupMounts) -> str | None:
    """The path of a ``/proc/PID/cgroup`` line, None when ``text`` is not such a line."""
    match = _PROC_CGROUP_LINE.match(text)
    if match is None:
        return None
    number, controllers, path = match.groups()
    if hierarchy == "v2":
        if number != "0" or controllers:
            raise CgroupPathError(
                f"{text!r} is a cgroup v1 line (hierarchy {number}, controllers "
                f"{controllers or 'none'}); give the cgroup2 line, the one starting with '0::'. "
                + accepted_forms(hierarchy, mounts)
            )
    elif "memory" not in controllers.split(","):
        raise CgroupPathError(
            f"{text!r} is not the memory hierarchy's line; give the line whose controllers "
            "include 'memory'. " + accepted_forms(hierarchy, mounts)
        )
    if not path.startswith("/"):
        raise CgroupPathError(f"{text!r}: the path after the second ':' must start with '/'")
    return path


def _strip_mount(text: str, hierarchy: Hierarchy, mounts: CgroupMounts) -> str:
    for mount_point in sorted(mounts.for_hierarchy(hierarchy), key=len, reverse=True):
        mount = mount_point.rstrip("/")
        if not mount:
            continue  # cgroup2 on / is no real layout; its paths read as group paths already
        if text == mount:
            return "/"
        if text.startswith(mount + "/"):
            return text[len(mount) :]
    if text.startswith(_FILESYSTEM_PREFIXES) or text.rstrip("/") == "/sys/fs/cgroup":
        where = ", ".join(mounts.for_hierarchy(hierarchy)) or "(none mounted)"
        raise CgroupPathError(
            f"{text!r} is a file system path outside the cgroup mount ({where}). "
            + accepted_forms(hierarchy, mounts)
        )
    return text


def normalize_cgroup_path(
    text: str, *, hierarchy: Hierarchy = "v2", mounts: CgroupMounts | None = None
) -> str:
    """``text`` in any accepted form -> the path inside the hierarchy (``/jobs/batch``).

    Raises :class:`CgroupPathError` (a ValueError) naming the accepted forms otherwise.
    """
    mounts = mounts or host_cgroup_mounts()
    if not isinstance(text, str):
        raise CgroupPathError(f"must be a string, not {type(text).__name__}")
    cleaned = text.strip()
    if not cleaned:
        raise CgroupPathError("must not be empty. " + accepted_forms(hierarchy, mounts))
    if any(ord(char) < 32 for char in cleaned):
        raise CgroupPathError(f"{text!r} holds control characters (one line, one group)")
    path = _from_proc_line(cleaned, hierarchy, mounts)
    if path is None:
        path = _strip_mount(cleaned, hierarchy, mounts) if cleaned.startswith("/") else cleaned
    parts = [part for part in path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise CgroupPathError(
            f"{text!r} must not contain '.' or '..' (name the group itself). "
            + accepted_forms(hierarchy, mounts)
        )
    return "/" + "/".join(parts)


def parse_cgroup_mounts(mountinfo: str) -> CgroupMounts:
    """Mount points of cgroup2 and of the v1 memory controller, from mountinfo text."""
    v2: list[str] = []
    memory: list[str] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        left_words, right_words = left.split(), right.split()
        if not sep or len(left_words) < 5 or len(right_words) < 3:
            continue
        mount_point = _unescape_octal(left_words[4])
        if right_words[0] == "cgroup2":
            v2.append(mount_point)
        elif right_words[0] == "cgroup" and "memory" in right_words[2].split(","):
            memory.append(mount_point)
    return CgroupMounts(tuple(v2), tuple(memory))


def _unescape_octal(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), text)


@functools.lru_cache(maxsize=8)
def host_cgroup_mounts(proc_root: str = "/proc") -> CgroupMounts:
    """This host's cgroup mounts (cached: mounts do not move under a running daemon), or the
    usual places when mountinfo cannot be read."""
    try:
        with open(f"{proc_root}/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            found = parse_cgroup_mounts(handle.read())
    except OSError:
        return FALLBACK_MOUNTS
    if not found.v2 and not found.memory_v1:
        return FALLBACK_MOUNTS
    return found
