"""The actuator against real processes: escalation, vanished victims, reused PIDs, groups."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from pressured.actuator import Actuator
from pressured.config import GuardSettings, KillSettings
from pressured.deathwatch import DeathWatch
from pressured.events import EventSource, KillRecord, KillResult, PressureEvent
from pressured.guard import Guard
from pressured.kernel import pidfd, procfs
from pressured.kernel.cgroupfs import Cgroup, discover_layout
from pressured.policies.base import Decision, Victim
from pressured.reaper import Reaper
from pressured.selfprotect import raise_fd_limit
from pressured.snapshot import CgroupRecord, Snapshot
from pressured.stragglers import find_stragglers
from pressured.testing.scratch import (
    FORK_SLEEPERS,
    ScratchGroup,
    scratch_unavailable_reason,
    wait_for_ready,
)
from tests.freezing import frozen_v1

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]
pytestmark = pytest.mark.kernel


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    with Reaper() as worker:
        yield worker


def workload(*args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pressured.testing.workloads", *args], stdout=subprocess.PIPE
    )
    wait_for_ready(proc, 30)
    return proc


def snapshot_of(*pids: int) -> Snapshot:
    event = PressureEvent(scope="system", level="some", source=EventSource.MANUAL)
    records = tuple(procfs.read_process(pid) for pid in pids)
    return Snapshot(scope="system", event=event, processes=records)


def execute(
    run_async: RunAsync, actuator: Actuator, victim: Victim, snap: Snapshot, dry_run: bool = False
) -> KillRecord:
    decision = Decision.kill(victim)
    coro = actuator.execute(
        victim, snap, decision, decided_ns=snap.event.monotonic_ns, dry_run=dry_run
    )
    result: KillRecord = run_async(coro)
    return result


def test_sigterm_first_escalates_to_sigkill_after_grace(
    run_async: RunAsync, reaper: Reaper
) -> None:
    """A victim that ignores SIGTERM is killed with SIGKILL once the grace period ends."""
    stubborn = workload("--ignore-term", "sleep")
    actuator = Actuator(
        reaper, KillSettings(sigterm_first=True, grace_ms=300), layout=discover_layout()
    )
    snap = snapshot_of(stubborn.pid)
    record = execute(run_async, actuator, Victim.process(snap.processes[0], "test"), snap)
    assert record.result is KillResult.KILLED
    assert record.signal == "SIGKILL"
    assert stubborn.wait(5) == -signal.SIGKILL


def test_sigterm_first_stops_there_when_the_victim_obeys(
    run_async: RunAsync, reaper: Reaper
) -> None:
    """A victim that exits on SIGTERM is not sent SIGKILL."""
    polite = workload("sleep")
    actuator = Actuator(
        reaper, KillSettings(sigterm_first=True, grace_ms=5000), layout=discover_layout()
    )
    snap = snapshot_of(polite.pid)
    record = execute(run_async, actuator, Victim.process(snap.processes[0], "test"), snap)
    assert record.result is KillResult.KILLED
    assert record.signal == "SIGTERM"
    assert polite.wait(5) == -signal.SIGTERM


def test_victim_that_exited_before_the_kill_is_vanished_and_nobody_else_dies(
    run_async: RunAsync, reaper: Reaper
) -> None:
    """Exit between choice and kill: no error, no signal to anyone else."""
    victim = workload("sleep")
    bystander = workload("sleep")
    snap = snapshot_of(victim.pid, bystander.pid)
    victim.kill()
    victim.wait()
    actuator = Actuator(reaper, KillSettings(), layout=discover_layout())
    record = execute(run_async, actuator, Victim.process(snap.processes[0], "test"), snap)
    assert record.result is KillResult.VANISHED
    assert bystander.poll() is None
    bystander.kill()
    bystander.wait()


def test_reused_pid_is_refused_by_the_identity_check(run_async: RunAsync, reaper: Reaper) -> None:
    """A live process whose start time differs from the snapshot's is never signalled."""
    other = workload("sleep")
    snap = snapshot_of(other.pid)
    record_in_snapshot = snap.processes[0]
    # The policy's victim carries the start time it saw; pretend it saw an older process.
    victim = Victim(
        kind=Victim.process(record_in_snapshot, "x").kind,
        reason="test",
        pid=other.pid,
        start_time=record_in_snapshot.start_time - 1,
    )
    actuator = Actuator(reaper, KillSettings(), layout=discover_layout())
    record = execute(run_async, actuator, victim, snap)
    assert record.result is KillResult.IDENTITY_CHANGED
    assert other.poll() is None
    other.kill()
    other.wait()


def test_dry_run_signals_nothing(run_async: RunAsync, reaper: Reaper) -> None:
    """Dry-run produces a full record and leaves the victim alive."""
    proc = workload("sleep")
    snap = snapshot_of(proc.pid)
    actuator = Actuator(reaper, KillSettings(), layout=discover_layout())
    record = execute(
        run_async, actuator, Victim.process(snap.processes[0], "test"), snap, dry_run=True
    )
    assert record.result is KillResult.DRY_RUN
    assert proc.poll() is None
    proc.kill()
    proc.wait()


def test_cgroup_victim_kills_and_reaps_every_member(
    run_async: RunAsync, reaper: Reaper, scratch: ScratchGroup
) -> None:
    """A cgroup victim: a pidfd per member, cgroup.kill, mrelease each, all confirmed."""
    child = scratch.child("job")
    members = [scratch.spawn_workload("hog", "16", group=child) for _ in range(2)]
    bystander = scratch.spawn_workload("sleep")
    record_group = CgroupRecord(
        path=child.path, memory=None, pressure=None, pids=tuple(p.pid for p in members)
    )
    event = PressureEvent(scope=scratch.path, level="some", source=EventSource.MANUAL)
    snap = Snapshot(scope=scratch.path, event=event, processes=(), cgroups=(record_group,))
    actuator = Actuator(reaper, KillSettings(), layout=scratch.layout)
    record = execute(run_async, actuator, Victim.group(record_group, "test"), snap)
    assert record.result is KillResult.KILLED
    assert record.members == 2
    assert record.signal == "cgroup.kill"
    assert all(p.wait(5) == -signal.SIGKILL for p in members)
    assert bystander.poll() is None


def test_wait_is_event_driven_not_a_timeout(run_async: RunAsync, reaper: Reaper) -> None:
    """Death is confirmed from the pidfd turning readable, long before the confirm limit."""
    proc = workload("sleep")
    snap = snapshot_of(proc.pid)
    actuator = Actuator(reaper, KillSettings(confirm_timeout_ms=60_000), layout=discover_layout())

    async def timed() -> tuple[KillRecord, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        record = await actuator.execute(
            Victim.process(snap.processes[0], "t"),
            snap,
            Decision.no_action("x"),
            decided_ns=0,
            dry_run=False,
        )
        return record, loop.time() - started

    record, elapsed = run_async(timed())
    assert record.result is KillResult.KILLED
    assert elapsed < 30  # far below the 60 s confirm limit: we were woken by the exit


# -- #11.3: a group is killed without one fd per member -------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def group_of(scratch: ScratchGroup, name: str, children: int) -> tuple[Cgroup, list[int]]:
    """A child group holding a parent and ``children`` forked sleepers (cheap: no exec)."""
    group = scratch.child(name)
    scratch.spawn([sys.executable, "-c", FORK_SLEEPERS, str(children)], group=group)
    wait_for_ready(scratch.processes[-1], 120)
    members = group.all_members()
    assert len(members) == children + 1
    return group, members


def kill_group_victim(
    run_async: RunAsync, reaper: Reaper, scratch: ScratchGroup, group: Cgroup, pids: list[int]
) -> KillRecord:
    record_group = CgroupRecord(path=group.path, memory=None, pressure=None, pids=tuple(pids))
    event = PressureEvent(scope=scratch.path, level="some", source=EventSource.MANUAL)
    snap = Snapshot(scope=scratch.path, event=event, processes=(), cgroups=(record_group,))
    actuator = Actuator(reaper, KillSettings(confirm_timeout_ms=120_000), layout=scratch.layout)
    return execute(run_async, actuator, Victim.group(record_group, "test"), snap)


def test_5000_member_group_kill_leaves_the_fd_count_at_its_baseline(
    run_async: RunAsync, reaper: Reaper
) -> None:
    """cgroup.kill of 5,000 members: all die, confirmed from cgroup.events, no fd left open."""
    if (reason := scratch_unavailable_reason()) is not None:
        pytest.skip(f"real-kernel test: {reason}")
    with ScratchGroup(None) as scratch:
        group, pids = group_of(scratch, "big", 4999)
        bystander = scratch.spawn_workload("sleep")
        baseline = open_fds()
        record = kill_group_victim(run_async, reaper, scratch, group, pids)
        assert record.result is KillResult.KILLED
        assert record.members == 5000
        assert group.all_members() == []
        assert open_fds() == baseline
        assert bystander.poll() is None


def test_group_larger_than_the_soft_fd_limit_is_killed_without_emfile(
    run_async: RunAsync, reaper: Reaper
) -> None:
    """Under a 1,024 soft RLIMIT_NOFILE a 1,200-member group is killed and nothing leaks
    (one pidfd per member used to hit EMFILE before cgroup.kill was ever written)."""
    if (reason := scratch_unavailable_reason()) is not None:
        pytest.skip(f"real-kernel test: {reason}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with ScratchGroup(None) as scratch:
        group, pids = group_of(scratch, "wide", 1199)
        baseline = open_fds()
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        try:
            record = kill_group_victim(run_async, reaper, scratch, group, pids)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert record.result is KillResult.KILLED
        assert record.members == 1200
        assert group.all_members() == []
        assert open_fds() == baseline


def test_raise_fd_limit_takes_the_soft_limit_to_the_hard_one() -> None:
    """Start-up lifts a low soft RLIMIT_NOFILE to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2048:
        pytest.skip(f"hard RLIMIT_NOFILE is {hard}: nothing to raise to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        assert raise_fd_limit() == (1024, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- #12.3: one kill per cause ---------------------------------------------------------------

FORKING_HOG = """
import os, signal, sys
for _ in range(8):
    if os.fork() == 0:
        block = bytearray(8 << 20)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        while True:
            signal.pause()
sys.stdout.write("ready\\n")
sys.stdout.flush()
while True:
    signal.pause()
"""


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
        return [int(word) for word in handle.read().split()]


def test_victim_with_a_family_dies_with_all_8_children_in_one_kill(
    run_async: RunAsync, reaper: Reaper, scratch: ScratchGroup
) -> None:
    """A parent and its 8 allocating children, named as the victim's family: all 9 die in
    one kill, the record lists them, the bystander lives, every fd is closed."""
    scratch.set_limit(512 << 20)
    bystander = scratch.spawn_workload("sleep")
    parent = scratch.spawn([sys.executable, "-c", FORKING_HOG])
    wait_for_ready(parent, 60)
    children = children_of(parent.pid)
    assert len(children) == 8
    snap = snapshot_of(parent.pid, *children, bystander.pid)
    by_pid = {record.pid: record for record in snap.processes}
    family = tuple((pid, by_pid[pid].start_time) for pid in children)
    victim = dataclasses.replace(Victim.process(by_pid[parent.pid], "test"), family=family)
    watch = [os.pidfd_open(pid) for pid in children]
    try:
        baseline = open_fds()
        actuator = Actuator(reaper, KillSettings(), layout=scratch.layout)
        record = execute(run_async, actuator, victim, snap)
        assert open_fds() == baseline
        assert record.result is KillResult.KILLED
        assert record.members == 9
        assert sorted(int(pid) for pid in str(record.figures["family"]).split(",")) == sorted(
            children
        )
        assert parent.wait(10) == -signal.SIGKILL
        assert all(pidfd.wait_exited(fd, 10) for fd in watch)
    finally:
        for fd in watch:
            os.close(fd)
    assert bystander.poll() is None


def test_family_member_whose_pid_was_reused_is_not_signalled(
    run_async: RunAsync, reaper: Reaper, scratch: ScratchGroup
) -> None:
    """A family entry whose start time no longer matches is skipped: only the victim dies."""
    victim_proc = scratch.spawn_workload("sleep")
    other = scratch.spawn_workload("sleep")
    snap = snapshot_of(victim_proc.pid, other.pid)
    by_pid = {record.pid: record for record in snap.processes}
    stale = ((other.pid, by_pid[other.pid].start_time - 1),)
    victim = dataclasses.replace(Victim.process(by_pid[victim_proc.pid], "test"), family=stale)
    actuator = Actuator(reaper, KillSettings(), layout=scratch.layout)
    record = execute(run_async, actuator, victim, snap)
    assert record.result is KillResult.KILLED
    assert record.members == 1 and record.figures["family_skipped"] == 1
    assert victim_proc.wait(10) == -signal.SIGKILL
    assert other.poll() is None


# -- #12.4: a group that cannot empty does not hold the scope -------------------------------


def test_group_with_a_frozen_member_is_dying_refused_again_and_confirmed_once_thawed(
    run_async: RunAsync, reaper: Reaper, scratch: ScratchGroup
) -> None:
    """cgroup.kill of a group whose member is frozen (v1 freezer): the kill returns as
    'dying' instead of waiting, the guard refuses the group meanwhile, and once thawed the
    group empties and the watch ends."""
    group = scratch.child("stuck")
    stuck = scratch.spawn_workload("hog", "16", group=group)
    other = scratch.spawn_workload("sleep", group=group)
    pids = group.all_members()
    record_group = CgroupRecord(path=group.path, memory=None, pressure=None, pids=tuple(pids))
    event = PressureEvent(scope=scratch.path, level="some", source=EventSource.MANUAL)
    snap = Snapshot(scope=scratch.path, event=event, processes=(), cgroups=(record_group,))
    settled: list[KillRecord] = []
    actuator = Actuator(
        reaper,
        KillSettings(confirm_timeout_ms=120_000),
        layout=scratch.layout,
        deaths=DeathWatch(on_settled=settled.append),
    )
    guard = Guard(GuardSettings(), deaths=actuator.deaths)
    victim = Victim.group(record_group, "test")

    async def go() -> tuple[KillRecord, str | None, bool]:
        with frozen_v1(stuck.pid):
            record = await actuator.execute(
                victim, snap, Decision.kill(victim), decided_ns=0, dry_run=False
            )
            refused = guard.check(victim, snap)
        # Thawed: the SIGKILL it has pending ends it, the group empties, the watch ends.
        async with asyncio.timeout(30):
            await actuator.deaths.wait_all()
        return record, refused, actuator.deaths.is_dying_group(group.path)

    record, refused, still_dying = run_async(go())
    assert record.result is KillResult.DYING
    assert record.signal == "cgroup.kill"
    assert refused is not None and "undying" in refused
    assert not still_dying
    assert [(r.target, r.result) for r in settled] == [(record.target, KillResult.KILLED)]
    assert settled[0].signal_to_exit_ms is not None
    assert stuck.wait(10) == -signal.SIGKILL
    assert other.wait(10) == -signal.SIGKILL


def wait_for_events_line(group: Cgroup, line: str, timeout_s: float = 10.0) -> None:
    """Wait for a line in ``cgroup.events``; the kernel wakes pollers (POLLPRI) on changes."""
    fd = os.open(group.file("cgroup.events"), os.O_RDONLY)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        deadline = time.monotonic() + timeout_s
        while line not in os.pread(fd, 4096, 0).decode().splitlines():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {line!r} in {group.path}/cgroup.events"
            poller.poll(remaining * 1000)
    finally:
        os.close(fd)


def test_kernel_fact_a_v2_frozen_task_still_dies_on_sigkill(scratch: ScratchGroup) -> None:
    """Kernel fact the frozen-victim tests rest on: cgroup v2 ``cgroup.freeze`` lets a fatal
    signal through (the task exits while its group stays frozen), so only the v1 freezer
    makes a task that cannot exit after SIGKILL."""
    group = scratch.child("v2frozen")
    proc = scratch.spawn_workload("hog", "16", group=group)
    group.freeze()
    wait_for_events_line(group, "frozen 1")
    fd = pidfd.open_pidfd(proc.pid)
    try:
        pidfd.send_signal(fd)
        assert pidfd.wait_exited(fd, 10)
    finally:
        os.close(fd)
        group.thaw()
    assert proc.wait(10) == -signal.SIGKILL


KEEPS_FORKING = """
import os, signal, sys, time
os.setpgid(0, 0)
sys.stdout.write("ready\\n")
sys.stdout.flush()
while True:
    if os.fork() == 0:
        while True:
            signal.pause()
    time.sleep(0.02)
"""


def process_group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from /proc."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            found.append(int(name))
    return found


def test_children_forked_after_the_snapshot_die_with_the_family(
    run_async: RunAsync, reaper: Reaper, scratch: ScratchGroup
) -> None:
    """A parent still forking when it is chosen: the children it made between the snapshot
    and the SIGKILL are of the family too, and die in the same kill (before, each needed a
    kill of its own: a faster decision made the forking-hog scenario take two kills)."""
    parent = scratch.spawn([sys.executable, "-c", KEEPS_FORKING])
    wait_for_ready(parent, 60)
    time.sleep(0.2)
    snap = snapshot_of(parent.pid, *children_of(parent.pid))
    by_pid = {record.pid: record for record in snap.processes}
    family = tuple((r.pid, r.start_time) for r in snap.processes if r.pid != parent.pid)
    assert family, "the parent had forked no child yet"
    victim = dataclasses.replace(Victim.process(by_pid[parent.pid], "test"), family=family)
    time.sleep(0.3)  # about 15 more children, none in the snapshot
    record = execute(run_async, actuator_for(reaper, scratch), victim, snap)
    assert record.result is KillResult.KILLED
    assert parent.wait(10) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while process_group_members(parent.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_group_members(parent.pid) == []
    assert int(record.figures["family_members"]) > len(family)


def actuator_for(reaper: Reaper, scratch: ScratchGroup) -> Actuator:
    return Actuator(reaper, KillSettings(), layout=scratch.layout)


def test_stragglers_are_found_by_process_group_and_birth_and_protection_still_holds(
    scratch: ScratchGroup,
) -> None:
    """The sweep finds the forking parent's children born since a given moment, and none
    that the guard's protection names (a straggler is checked like any victim)."""
    parent = scratch.spawn([sys.executable, "-c", KEEPS_FORKING])
    wait_for_ready(parent, 60)
    since = procfs.start_ticks_at(time.monotonic_ns())
    time.sleep(0.3)
    own = os.getpgid(parent.pid)
    sid = os.getsid(parent.pid)
    found = find_stragglers(own, sid, since, {parent.pid})
    assert found and all(os.getpgid(pid) == own for pid, _ in found)
    assert find_stragglers(own, sid, since, {parent.pid}, protection=lambda _r: "protected") == []
    later = procfs.start_ticks_at(time.monotonic_ns() + 10**9)
    assert find_stragglers(own, sid, later, {parent.pid}) == []
