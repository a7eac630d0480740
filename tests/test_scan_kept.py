"""Skim files kept open between scans: same numbers as fresh opens, bounded, and closed when
their process leaves the scope or exits."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pressured.kernel import procfs
from pressured.scan import kept as kept_module
from pressured.scan import skim
from pressured.scan.kept import KeptSkim
from pressured.testing.scratch import ScratchGroup


def asleep(pid: int) -> bool:
    try:
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(5)]
    # Compare numbers only once each sleeper sits in nanosleep: while its loader still maps
    # libraries its resident size changes between two reads.
    deadline = time.monotonic() + 10
    while not all(asleep(proc.pid) for proc in procs):
        assert time.monotonic() < deadline, "sleepers did not settle"
        time.sleep(0.01)
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("native", [False, True], ids=["python-pread", "native-pread"])
@pytest.mark.parametrize("name", ["statm", "oom_score"])
def test_kept_fds_read_what_fresh_opens_read(
    sleepers: list[subprocess.Popen[bytes]],
    name: str,
    native: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twice over (the second time on the kept fds): the numbers a fresh skim gives."""
    if native and not skim.NATIVE_AVAILABLE:
        pytest.skip("the optional native skim extension is not built here")
    monkeypatch.setattr(skim, "NATIVE_AVAILABLE", native)
    pids = [proc.pid for proc in sleepers]
    kept = KeptSkim(name)
    try:
        for _ in range(2):
            result = kept.skim("/proc", pids, name)
            assert result.values == procfs.skim_python("/proc", pids, name).values
        assert len(kept) == len(pids)
    finally:
        kept.close()


def test_an_exited_process_is_vanished_and_its_fd_closed(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """A kept fd of a process that exited reads ESRCH: counted vanished, fd closed."""
    pids = [proc.pid for proc in sleepers]
    kept = KeptSkim("oom_score")
    try:
        kept.skim("/proc", pids, "oom_score")
        before = open_fds()
        sleepers[0].kill()
        sleepers[0].wait()
        result = kept.skim("/proc", pids, "oom_score")
        assert result.vanished == 1 and sleepers[0].pid not in result.values
        assert len(kept) == len(pids) - 1 and open_fds() == before - 1
    finally:
        kept.close()


def test_processes_that_left_the_scope_have_their_fds_closed(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """A scan without a process closes its fd: nothing accumulates across scans."""
    pids = [proc.pid for proc in sleepers]
    baseline = open_fds()
    kept = KeptSkim("statm")
    kept.skim("/proc", pids, "statm")
    assert open_fds() == baseline + len(pids)
    kept.skim("/proc", pids[:2], "statm")
    assert len(kept) == 2 and open_fds() == baseline + 2
    kept.close()
    assert open_fds() == baseline


def test_kept_fds_are_bounded_and_the_rest_is_read_fresh(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    """Past max_fds, processes are skimmed with a fresh open: all values, few fds."""
    pids = [proc.pid for proc in sleepers]
    kept = KeptSkim("statm", max_fds=2)
    try:
        result = kept.skim("/proc", pids, "statm")
        assert set(result.values) == set(pids)
        assert len(kept) == 2
    finally:
        kept.close()


def test_files_of_a_killed_group_are_released_without_another_scan(
    scratch: ScratchGroup,
) -> None:
    """A cgroup victim's members leave the scope when they die: right after the kill the
    scope closes their kept files, instead of holding one fd per member until the scope's
    next event (the fault soak's 2,000-member victim left 2,000 fds open)."""
    from pressured.scan.kept import KeptSkims, prewarm_scope, release_departed

    crowd = scratch.child("crowd")
    members = [scratch.spawn(["sleep", "60"], group=crowd) for _ in range(20)]
    bystander = scratch.spawn(["sleep", "60"])
    kept = KeptSkims()
    wanted = {proc.pid for proc in [*members, bystander]}
    deadline = time.monotonic() + 10
    while not wanted <= set(scratch.group.all_members()):  # each joins its group, then execs
        assert time.monotonic() < deadline, "sleepers did not join their groups"
        time.sleep(0.01)
    try:
        before = open_fds()
        assert prewarm_scope(kept, ("statm",), scratch.group) == 21
        assert open_fds() == before + 21
        crowd.kill()
        for proc in members:
            proc.wait(10)
        deadline = time.monotonic() + 10
        while crowd.all_members() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert release_departed(kept, scratch.group) == 20
        assert kept.open_fds == 1  # the bystander's, still in scope
        assert open_fds() == before + 1
        assert bystander.poll() is None
    finally:
        kept.close()


@pytest.fixture
def many_sleepers() -> Iterator[list[int]]:
    """Twenty settled sleepers (enough for two halves of ten with the split lowered)."""
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(20)]
    try:
        deadline = time.monotonic() + 10
        while not all(asleep(proc.pid) for proc in procs):
            assert time.monotonic() < deadline, "sleepers did not settle"
            time.sleep(0.01)
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("name", ["stat", "oom_score"])
def test_a_skim_read_in_two_halves_reads_what_one_thread_reads(
    many_sleepers: list[int], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second half read on a helper thread: the same lines and values, every process."""
    if not skim.NATIVE_AVAILABLE:
        pytest.skip("the split applies to the optional native skim, not built here")
    monkeypatch.setattr(kept_module, "SPLIT_AT", 4)
    halves: list[int] = []
    real = kept_module.read_in_halves

    def counted(*args: Any) -> Any:
        halves.append(1)
        return real(*args)

    monkeypatch.setattr(kept_module, "read_in_halves", counted)
    with ThreadPoolExecutor(1) as helper:
        split, single = KeptSkim(name, helper=helper), KeptSkim(name)
        try:
            for _ in range(2):  # the first skim opens the fds, the second preads them
                both = split.skim("/proc", many_sleepers, name)
                one = single.skim("/proc", many_sleepers, name)
                assert both.values == one.values and both.lines == one.lines
                assert len(both.values) == len(many_sleepers) and both.complete
        finally:
            split.close()
            single.close()
    assert halves, "the kept skim never read in halves"


def test_a_busy_helper_does_not_hold_up_the_skim(
    many_sleepers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper's one thread is blocked elsewhere: the skim takes its second half back and
    finishes with every process read (it would otherwise wait for the blocker)."""
    if not skim.NATIVE_AVAILABLE:
        pytest.skip("the split applies to the optional native skim, not built here")
    monkeypatch.setattr(kept_module, "SPLIT_AT", 4)
    release = threading.Event()
    with ThreadPoolExecutor(1) as helper:
        helper.submit(release.wait, 30)
        kept = KeptSkim("stat", helper=helper)
        try:
            kept.skim("/proc", many_sleepers, "stat")
            result = kept.skim("/proc", many_sleepers, "stat")
            assert not release.is_set()
            assert sorted(result.lines) == sorted(many_sleepers) and result.complete
        finally:
            release.set()
            kept.close()
