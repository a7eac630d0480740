"""The ``pod`` scope: the cgroup that holds this container's own cgroup.

In a Kubernetes pod every container has its own cgroup under the pod's, and the pod's
``memory.max`` is the sum of its containers' limits; pressure anywhere in the pod shows in the
pod group's ``memory.pressure``. A sidecar therefore watches the *parent* of its own cgroup.

Inside a cgroup namespace (every container on cgroup v2) ``/proc/self/cgroup`` says ``0::/``
and the runtime's cgroup2 mount shows only the container's own subtree: the pod's group is not
reachable there. When the host's hierarchy is mounted (a ``hostPath`` of ``/sys/fs/cgroup``),
mountinfo gives that mount's root relative to our namespace as ``/../..``: our own group lies
that many levels below the mount point, and the one directory at that depth whose
``cgroup.procs`` lists our PID is it (checked on the real kernel with ``unshare --cgroup``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pressured.config import Settings
from pressured.errors import ConfigError, KernelError
from pressured.kernel import cgroupfs

POD_KEYWORD = "pod"
HOST_MOUNT_HINT = (
    "mount the host's cgroup hierarchy into the container (a hostPath volume of /sys/fs/cgroup "
    "at /sys/fs/cgroup, as examples/kubernetes/sidecar.yaml does), or name the group in "
    "'cgroup', or set cgroup = 'system' to watch node pressure instead"
)


@dataclass(frozen=True, slots=True)
class PodGroup:
    """Where the pod scope was found and how."""

    path: str
    """The pod's group, as a path under the cgroup2 mount point."""
    own: str
    """This process's own group, same form."""
    how: str


def _cgroup2_mount_root(proc_root: str, mount_point: str) -> str:
    """The root field of the *topmost* cgroup2 mount at ``mount_point`` (a hostPath bind
    mounted over the runtime's own mount comes later in mountinfo and hides it)."""
    root = "/"
    with open(f"{proc_root}/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            words = left.split()
            if right.split()[:1] == ["cgroup2"] and len(words) >= 5 and words[4] == mount_point:
                root = words[3]
    return root


def _parent(path: str) -> str:
    return "/" + "/".join(path.strip("/").split("/")[:-1])


def _find_own_below(mount_point: Path, depth: int, pid: int) -> str | None:
    """The directory ``depth`` levels below the mount whose cgroup.procs lists ``pid``."""
    level = [mount_point]
    for _ in range(depth):
        level = [
            Path(entry.path)
            for directory in level
            for entry in _scandirs(directory)
            if entry.is_dir(follow_symlinks=False)
        ]
    for directory in level:
        try:
            pids = (directory / "cgroup.procs").read_text(encoding="ascii").split()
        except OSError:
            continue
        if str(pid) in pids:
            return "/" + str(directory.relative_to(mount_point))
    return None


def _scandirs(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except OSError:
        return []


def find_pod_group(
    layout: cgroupfs.CgroupLayout, proc_root: str = "/proc", pid: int | None = None
) -> PodGroup:
    """The cgroup holding process ``pid``'s (default: our own) group. Raises KernelError with
    the remedy when the pod's group cannot be seen from here."""
    if layout.unified is None:
        raise KernelError("no cgroup2 hierarchy is mounted, so there is no pod group to watch")
    pid = os.getpid() if pid is None else pid
    own = cgroupfs.own_cgroup(pid, proc_root)
    if own is None:
        raise KernelError(f"process {pid} is in no cgroup2 group")
    mount_point = layout.unified.mount_point
    root = _cgroup2_mount_root(proc_root, mount_point)
    if root.startswith("/.."):
        # The mount shows more than our namespace: we sit `ups` levels below its root.
        ups = sum(1 for part in root.split("/") if part == "..")
        own_depth = len([part for part in own.split("/") if part])
        found = _find_own_below(Path(mount_point), ups + own_depth, pid)
        if found is None:
            raise KernelError(
                f"no group {ups + own_depth} levels below {mount_point} lists process {pid}"
            )
        return PodGroup(_parent(found), found, f"cgroup namespace: own group found at {found}")
    relative = own[len(root) :] if root != "/" and own.startswith(root) else own
    if relative.strip("/") == "":
        raise KernelError(
            f"this container's own group is the root of what {mount_point} shows (a cgroup "
            f"namespace, /proc/self/cgroup says 0::{own}), so the pod's group above it is "
            f"out of sight: {HOST_MOUNT_HINT}"
        )
    if _parent(relative) == "/":
        raise KernelError(
            f"this process's group {relative} sits right under the root: there is no pod group "
            "above it (outside a container, name the group in 'cgroup', or use 'system')"
        )
    return PodGroup(_parent(relative), relative, f"parent of own group {relative}")


def resolve_pod_scopes(settings: Settings) -> tuple[Settings, PodGroup | None]:
    """``settings`` with every ``cgroup = "pod"`` replaced by the pod's group (unchanged when
    no scope names it). Raises ConfigError naming the scope when it cannot be found."""
    indexes = [i for i, scope in enumerate(settings.scopes) if scope.cgroup == POD_KEYWORD]
    if not indexes:
        return settings, None
    proc_root = settings.daemon.proc_root
    try:
        pod = find_pod_group(cgroupfs.discover_layout(proc_root), proc_root)
    except (KernelError, OSError) as exc:
        raise ConfigError(f"scopes.{indexes[0]}.cgroup", f"'{POD_KEYWORD}': {exc}") from None
    scopes = tuple(
        scope.model_copy(update={"cgroup": pod.path}) if index in indexes else scope
        for index, scope in enumerate(settings.scopes)
    )
    return settings.model_copy(update={"scopes": scopes}), pod
