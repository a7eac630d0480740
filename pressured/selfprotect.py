"""Keep the daemon itself out of the crisis it manages: locked memory, never an OOM victim."""

from __future__ import annotations

import ctypes
import os
import resource
from dataclasses import dataclass

from pressured.kernel import procfs

MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class MlockOutcome:
    locked: bool
    flags: str
    error: str | None = None


def lock_memory() -> MlockOutcome:
    """``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)``, falling back without ONFAULT.

    ONFAULT (Linux 4.4+) locks pages as they are first touched instead of populating every
    mapping now, which keeps a Python process's locked footprint near its real use.
    """
    attempts = (
        (MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT"),
        (MCL_CURRENT | MCL_FUTURE, "MCL_CURRENT|MCL_FUTURE"),
    )
    # Hand freed start-up heap (import-time garbage) back first: once locked, it would stay
    # resident for the daemon's whole life.
    _libc.malloc_trim(0)
    error = None
    for flags, label in attempts:
        if _libc.mlockall(flags) == 0:
            return MlockOutcome(True, label)
        error = os.strerror(ctypes.get_errno())
    return MlockOutcome(False, "", error)


def unlock_memory() -> None:
    _libc.munlockall()


def protect_from_oom(adj: int, proc_root: str = "/proc") -> tuple[int, int]:
    """Set our own oom_score_adj; return (before, after). Raises OSError when refused."""
    before = procfs.read_oom_score_adj("self", proc_root)
    procfs.write_oom_score_adj(adj, "self", proc_root)
    return before, procfs.read_oom_score_adj("self", proc_root)


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (soft before, soft after).

    The kill path needs a few fds at the worst moment (pidfds, /proc files, the journal): a
    distribution's default soft limit of 1,024 is what a large cgroup victim or a busy scan
    runs into first. The hard limit is ours to take without privilege.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard
        if hard == resource.RLIM_INFINITY:
            # An unlimited hard limit is not a valid soft value for NOFILE: take nr_open.
            with open("/proc/sys/fs/nr_open", encoding="ascii") as handle:
                target = int(handle.read())
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft, soft
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]
