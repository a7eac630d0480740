"""Family members born after the snapshot: children a chosen family forked between the scan
that listed it and the SIGKILL that ended it.

A family is listed from the snapshot (pressured/family.py); a parent that keeps forking makes
new children while the decision and the kill are under way, and those outlive the kill (the
faster the decision, the more often: the forking-hog scenario took two kills). After the
family's SIGKILL nobody in it can fork again, so one look at the processes born since the
scan finds every straggler: same process group and session as the victim, started at or
after the scan began. A cgroup victim needs none of this (``cgroup.kill`` takes late members
too).

Blocking (one ``stat`` read per process): run it off the loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection

from pressured.errors import ParseError
from pressured.kernel.procfs import (
    PF_KTHREAD,
    ProcessRecord,
    list_pids,
    parse_stat,
    read_process,
)

Protection = Callable[[ProcessRecord], "str | None"]

MAX_STRAGGLERS = 4096
"""Stragglers killed per family kill at most (a fork bomb's children are all stopped by the
kill of their parents; this bounds the work and the fds of one sweep)."""


def find_stragglers(
    pgid: int,
    sid: int,
    born_since_ticks: int,
    known: Collection[int],
    *,
    proc_root: str = "/proc",
    protection: Protection | None = None,
) -> list[tuple[int, int]]:
    """``(pid, start time)`` of every live process in process group ``pgid`` of session
    ``sid`` that started at or after ``born_since_ticks`` (``stat`` clock ticks since boot)
    and is not in ``known``. Never PID 1, this process, a kernel thread, or a process that
    ``protection`` names a reason for (read in full, without its command line, for that)."""
    found: list[tuple[int, int]] = []
    own = os.getpid()
    try:
        pids = list_pids(proc_root)
    except OSError:
        return found
    for pid in pids:
        if pid in known or pid in (1, own):
            continue
        try:
            with open(f"{proc_root}/{pid}/stat", "rb") as handle:
                stat = parse_stat(handle.read(4096))
        except (OSError, ParseError):
            continue  # gone, or unreadable: not ours to kill
        if (
            stat.pgid == pgid
            and stat.sid == sid
            and stat.start_time >= born_since_ticks
            and stat.state not in ("Z", "X")
            and not stat.flags & PF_KTHREAD
        ):
            if protection is not None and _protected(pid, proc_root, protection):
                continue
            found.append((pid, stat.start_time))
            if len(found) >= MAX_STRAGGLERS:
                break
    return found


def _protected(pid: int, proc_root: str, protection: Protection) -> bool:
    try:
        record = read_process(pid, proc_root, with_cmdline=False)
    except (OSError, ParseError):
        return True  # gone or unreadable: not killed blind
    return protection(record) is not None
