"""``pressured.kill_and_reap``: kill one process (or cgroup) and get its memory back now.

SIGKILL through a pidfd and ``process_mrelease`` back to back on a reaper thread (see the
ESRCH race in DESIGN.md), then wait for the exit on the loop, and return a
:class:`~pressured.events.KillRecord` with the timings. Pass a long-lived
:class:`~pressured.reaper.Reaper` to reuse its pinned thread; without one a temporary reaper
is created for the call (creating a thread under memory pressure is best avoided).
"""

from __future__ import annotations

import contextlib
import os
import time

from pressured.actuator import elapsed_ms, wait_exited
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
    """``cgroup.kill`` a v2 group and mrelease every member; wait for all of them to exit."""
    group = Cgroup(discover_layout(), path, memcg_v1_path)
    usage = 0
    with contextlib.suppress(OSError, KernelError):
        usage = group.memory().current_bytes
    fds: list[tuple[int, int]] = []
    for member in group.all_members():
        with contextlib.suppress(ProcessLookupError):
            fds.append((member, pidfd_mod.open_pidfd(member)))
    temporary = reaper is None
    worker = reaper or Reaper()
    try:
        if temporary:
            worker.start()
        outcome = await worker.kill_group(group, fds)
        exits = [await wait_exited(fd, timeout_s) for _, fd in fds]
    finally:
        if temporary:
            worker.close()
        for _, fd in fds:
            os.close(fd)
    reaped = [m.reaped_ns for m in outcome.members if m.reaped_ns is not None]
    done = [ns for ns in exits if ns is not None]
    result = (
        KillResult.KILLED
        if outcome.killed and len(done) == len(fds)
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
        members=len(fds),
        mrelease=first,
        signal_to_reaped_ms=elapsed_ms(outcome.signal_ns, max(reaped)) if reaped else None,
        signal_to_exit_ms=elapsed_ms(outcome.signal_ns, max(done)) if done else None,
        wall_time=time.time(),
    )
