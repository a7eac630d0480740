"""The reaper thread: pinned affinity read from inside, kill+mrelease, bounded queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from pressured.kernel import pidfd
from pressured.kernel.pidfd import MreleaseStatus
from pressured.reaper import Reaper, ReaperBusy, kill_and_release
from pressured.testing.scratch import wait_for_ready

pytestmark = pytest.mark.kernel


def _cpus_allowed_list(tid: int) -> str:
    with open(f"/proc/self/task/{tid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("Cpus_allowed_list:"):
                return line.split()[1]
    raise AssertionError("no Cpus_allowed_list")


def test_affinity_is_what_the_configuration_says_seen_from_inside() -> None:
    """Pinned to the last CPU: the thread reports it, /proc agrees, the main thread is free."""
    allowed = sorted(os.sched_getaffinity(0))
    target = {allowed[-1]}
    with Reaper(cpus=target) as reaper:
        info = reaper.thread_info()
        assert info is not None
        assert info.cpus == frozenset(target)
        assert info.native_id != threading.get_native_id()
        assert _cpus_allowed_list(info.native_id) == str(allowed[-1])
    assert sorted(os.sched_getaffinity(0)) == allowed


def test_default_affinity_is_every_allowed_cpu() -> None:
    """With no CPUs configured the reaper may run on every CPU the daemon may use."""
    with Reaper() as reaper:
        info = reaper.thread_info()
        assert info is not None and info.cpus == frozenset(os.sched_getaffinity(0))


def test_kill_and_release_reaps_a_256_mib_child() -> None:
    """SIGKILL then mrelease back to back on a real 256 MiB child: reaped or already gone."""
    child = subprocess.Popen(
        [sys.executable, "-m", "pressured.testing.workloads", "hog", "256"],
        stdout=subprocess.PIPE,
    )
    wait_for_ready(child, 60)
    fd = pidfd.open_pidfd(child.pid)
    try:
        outcome = kill_and_release(child.pid, fd)
        assert outcome.signalled
        assert outcome.mrelease is not None
        assert outcome.mrelease.status in (MreleaseStatus.REAPED, MreleaseStatus.GONE)
        if outcome.mrelease.status is MreleaseStatus.REAPED:
            assert outcome.reaped_ns is not None and outcome.reaped_ns >= outcome.signal_ns
    finally:
        os.close(fd)
    assert child.wait(10) == -signal.SIGKILL


def test_queue_is_bounded() -> None:
    """A full queue refuses new jobs at once instead of making the loop wait."""
    gate = threading.Event()
    with Reaper(queue_size=2) as reaper:
        reaper.submit(gate.wait)
        reaper.submit(gate.wait)
        with pytest.raises(ReaperBusy):
            reaper.submit(gate.wait)
        gate.set()


def test_restart_replaces_the_thread_with_the_same_affinity() -> None:
    """A restarted reaper has a new thread, pinned like the old one."""
    with Reaper(cpus={min(os.sched_getaffinity(0))}) as reaper:
        first = reaper.thread_info()
        reaper.restart()
        second = reaper.wait_ready(10)
        assert first is not None and second is not None
        assert second.native_id != first.native_id
        assert second.cpus == first.cpus
        assert reaper.restarts == 1
