"""``pressured.kill_and_reap``: kill one process (or cgroup) and get its memory back now.

SIGKILL through a pidfd and ``process_mrelease`` back to back on a reaper thread (see the
ESRCH race in docs/design.md), then wait for the exit on the loop, and return a
:class:`~pressured.events.KillRecord` with the timings. Pass a long-lived
:class:`~pressured.reaper.Reaper` to reuse its pinned thread; without one a temporary reaper
is created for the call (creating a thread under memory pressure is best avoided).
"""

from __future__ import annotations

import contextlib
import time

from pressured.actuator import GROUP_MRELEASE_MEMBERS, elapsed_ms, wait_group_empty
from pressured.deathwatch import wait_exited
from pressured.errors import KernelError
from pressured.events import KillRecord, KillResult, VictimKind
from pressured.kernel import pidfd as pidfd_mod
from pressured.kernel import procfs
from pressured.kernel.cgroupfs import Cgroup, discover_layout
from pressured.reaper import Reaper, ReapOutcome


def pid_of_pidfd(fd: int) -> int:
    """The PID behind a pidfd, from ``/proc/self/fdinfo`` (-1 once the process is reaped)."""
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    raise KernelError(f"fd {fd} is not a pidfd")


async def kill_and_reap(
    pid: int | None = None,
    *,
    pidfd: int | None = None,
    reaper: Reaper | None = None,
    timeout_s: float = 10.0,
    reason: str = "kill_and_reap",
) -> KillRecord:
    """Kill the process given by ``pid`` or by an open ``pidfd`` (not closed by us)."""
    if (pid is None) == (pidfd is None):
        raise ValueError("give exactly one of pid or pidfd")
    own_fd = pidfd is None
    if pidfd is None:
        assert pid is not None  # noqa: S101 - checked above
        try:
            fd = pidfd_mod.open_pidfd(pid)
        except ProcessLookupError:
            return _process_record(pid, "?", reason, KillResult.VANISHED)
    else:
        fd = pidfd
        pid = pid_of_pidfd(fd)
    comm, rss = "?", 0
    with contextlib.suppress(OSError, ValueError):
        record = procfs.read_process(pid)
        comm, rss = record.comm, record.memory_bytes
    temporary = reaper is None
    worker = reaper or Reaper()
    try:
        if temporary:
            worker.start()
        outcome = await worker.kill(pid, fd)
        if not outcome.signalled:
            return _process_record(pid, comm, reason, KillResult.VANISHED)
        exit_ns = await wait_exited(fd, timeout_s)
    finally:
        if temporary:
            worker.close()
        if own_fd:
            pidfd_mod.close_quietly(fd)
    result = KillResult.KILLED if exit_ns is not None else KillResult.NOT_CONFIRMED
    return _process_record(pid, comm, reason, result, rss=rss, outcome=outcome, exit_ns=exit_ns)


def _process_record(
    pid: int,
    comm: str,
    reason: str,
    result: KillResult,
    *,
    rss: int = 0,
    outcome: ReapOutcome | None = None,
    exit_ns: int | None = None,
) -> KillRecord:
    """A kill record for a library kill (no policy, scope or level behind it)."""
    return KillRecord(
        kind=VictimKind.PROCESS,
        target=f"pid {pid} ({comm})",
        pid=pid,
        comm=comm,
        cgroup=None,
        policy="",
        reason=reason,
        scope="",
        level="",
        result=result,
        signal="SIGKILL" if outcome is not None else "none",
        rss_before_bytes=rss,
        mrelease=outcome.mrelease if outcome is not None else None,
        signal_to_reaped_ms=outcome.signal_to_reaped_ms if outcome is not None else None,
        signal_to_exit_ms=elapsed_ms(outcome.signal_ns, exit_ns) if outcome else None,
    )


async def kill_and_reap_cgroup(
    path: str,
    *,
    reaper: Reaper | None = None,
    timeout_s: float = 10.0,
    reason: str = "kill_and_reap_cgroup",
    memcg_v1_path: str | None = None,
) -> KillRecord:
    """``cgroup.kill`` a v2 group and mrelease its first members; wait until it is empty."""
    group = Cgroup(discover_layout(), path, memcg_v1_path)
    usage = 0
    with contextlib.suppress(OSError, KernelError):
        usage = group.memory().current_bytes
    members = group.all_members()
    # pidfds for a bounded few only (opened before cgroup.kill, so they can be reaped):
    # one per member would run out of fds on a large group.
    fds: list[tuple[int, int]] = []
    temporary = reaper is None
    worker = reaper or Reaper()
    try:
        for member in members[:GROUP_MRELEASE_MEMBERS]:
            with contextlib.suppress(ProcessLookupError):
                fds.append((member, pidfd_mod.open_pidfd(member)))
        if temporary:
            worker.start()
        outcome = await worker.kill_group(group, fds)
    finally:
        if temporary:
            worker.close()
        for _, fd in fds:
            pidfd_mod.close_quietly(fd)
    exit_ns = await wait_group_empty(group, timeout_s) if outcome.killed else None
    reaped = [m.reaped_ns for m in outcome.members if m.reaped_ns is not None]
    result = (
        KillResult.KILLED
        if exit_ns is not None
        else (KillResult.FAILED if not outcome.killed else KillResult.NOT_CONFIRMED)
    )
    first = next((m.mrelease for m in outcome.members if m.mrelease), None)
    return KillRecord(
        kind=VictimKind.CGROUP,
        target=f"cgroup {path}",
        pid=None,
        comm="",
        cgroup=path,
        policy="",
        reason=reason,
        scope="",
        level="",
        result=result,
        signal="cgroup.kill",
        rss_before_bytes=usage,
        members=len(members),
        mrelease=first,
        signal_to_reaped_ms=elapsed_ms(outcome.signal_ns, max(reaped)) if reaped else None,
        signal_to_exit_ms=elapsed_ms(outcome.signal_ns, exit_ns),
        wall_time=time.time(),
    )
