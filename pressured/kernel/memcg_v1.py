"""Hybrid hosts: which v1 memory cgroup holds a v2 group's memory figures.

On a hybrid host the v2 group has pressure files and ``cgroup.kill`` but no memory controller;
usage and limit live in a v1 memcg, which need not sit at the path mirroring the v2 group
(systemd puts both at the same path, but a container runtime, a test harness or a person with
``mkdir`` may not). When the configuration does not say where, the members tell us: each
process's ``/proc/PID/cgroup`` names its v1 memory group, and the deepest group holding all of
them is the one whose figures describe the scope.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pressured.kernel.cgroupfs import Cgroup, Mount

# Reading /proc/PID/cgroup of every member of a huge scope would cost more than it tells:
# the first few hundred agree with the rest in any real layout.
MAX_MEMBERS_READ = 256


def _memory_path(pid: int, proc_root: str) -> str | None:
    from pressured.kernel.procfs import parse_cgroup_v1

    try:
        with open(f"{proc_root}/{pid}/cgroup", "rb") as handle:
            return parse_cgroup_v1(handle.read(), "memory")
    except (FileNotFoundError, ProcessLookupError):
        return None  # gone since the group was listed


def common_ancestor(paths: Iterable[str]) -> str | None:
    """The deepest path that is an ancestor-or-self of every path; None for none given."""
    common: list[str] | None = None
    for path in paths:
        parts = [part for part in path.split("/") if part]
        if common is None:
            common = parts
            continue
        length = 0
        for mine, theirs in zip(common, parts, strict=False):
            if mine != theirs:
                break
            length += 1
        common = common[:length]
    return None if common is None else "/" + "/".join(common)


def _v1_pids(directory: str) -> set[int] | None:
    """Every PID in a v1 group and its descendants; None when it cannot be read whole."""
    pids: set[int] = set()
    for dirpath, _dirnames, filenames in os.walk(directory):
        if "cgroup.procs" not in filenames:
            continue
        try:
            with open(os.path.join(dirpath, "cgroup.procs"), encoding="ascii") as handle:
                pids.update(int(word) for word in handle.read().split())
        except FileNotFoundError:
            continue  # removed mid-walk
        except (OSError, ValueError):
            return None
    return pids


def members_memcg_v1(
    pids: Iterable[int], mount: Mount | None = None, proc_root: str = "/proc"
) -> str | None:
    """The deepest v1 memory group holding every listed process, or None when there are no
    members, they only share the root memcg (whose figures are the whole host's), or the group
    also holds processes that are not listed (its figures would not be the members' alone)."""
    members = list(pids)
    paths = []
    for pid in members[:MAX_MEMBERS_READ]:
        path = _memory_path(pid, proc_root)
        if path is not None:
            paths.append(path)
    found = common_ancestor(paths)
    if found in (None, "/"):
        return None
    if mount is not None:
        from pressured.kernel.cgroupfs import _join

        held = _v1_pids(str(_join(mount, found)))
        if held is None or not held <= set(members):
            return None
    return found


def resolve_memory_source(group: Cgroup) -> dict[str, str]:
    """Let this (scope) group find its v1 memcg from its members, now and whenever it is read
    later (members may arrive after start-up), and say where its figures come from."""
    group.discover_memcg_v1 = True
    return describe_memory_source(group)


def describe_memory_source(group: Cgroup) -> dict[str, str]:
    """Where this group's memory figures come from, for `pressured check` and the start-up
    log: ``{"source": "v2" | "v1" | "none", "path": ..., "how": ...}``."""
    v2 = group.directory
    if (v2 / "memory.current").exists():
        return {"source": "v2", "path": str(v2), "how": "the group's own memory controller"}
    if group.layout.memory_v1 is None:
        return {"source": "none", "path": "", "how": "no memory controller reaches this group"}
    directory = group._v1_memory_dir()
    if directory is None:
        return {
            "source": "none",
            "path": "",
            "how": "no v1 memcg at the mirrored path, none configured (memcg_v1), and no v1 "
            "group holds the members alone (none yet, only the root, or shared with other "
            "processes): cgroup policies see no memory figures for the scope",
        }
    how = {
        "configured": "memcg_v1 from the configuration",
        "mirrored": "the v1 group at the path mirroring the v2 group",
        "members": "the deepest v1 group holding the scope's processes and no others "
        "(from /proc/PID/cgroup)",
    }[group.memcg_v1_origin or "mirrored"]
    return {"source": "v1", "path": str(directory), "how": how}
