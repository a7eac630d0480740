"""The reaper thread: pinned affinity read from inside, kill+mrelease, bounded queue."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pressured.kernel import pidfd
from pressured.kernel.pidfd import MreleaseStatus
from pressured.reaper import Reaper, ReaperBusy, ThreadInfo, kill_and_release
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup, wait_for_ready

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


# -- #11.5: each job owns its fd; restart and shutdown never wait on a stuck thread ----------


def sleeper() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pressured.testing.workloads", "sleep"], stdout=subprocess.PIPE
    )
    wait_for_ready(proc, 30)
    return proc


def test_late_job_never_signals_the_process_that_now_holds_its_fd_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A kill job that starts signalling after its caller gave up and closed its pidfd, whose
    number now refers to another process, must not kill that other process.

    Seam: the signal call waits on a gate, so the job is started but has not signalled yet
    when the caller's timeout fires (on a loaded host the thread is simply descheduled)."""
    victim, other = sleeper(), sleeper()
    started, gate = threading.Event(), threading.Event()
    real_send = pidfd.send_signal

    def late_send(fd: int, sig: int = signal.SIGKILL) -> None:
        started.set()
        gate.wait(30)
        real_send(fd, sig)

    monkeypatch.setattr(pidfd, "send_signal", late_send)
    try:
        with Reaper() as reaper:
            number = pidfd.open_pidfd(victim.pid)

            async def give_up() -> None:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await reaper.kill(victim.pid, number)

            asyncio.run(give_up())
            assert started.wait(10), "the job should have started before its caller gave up"
            os.close(number)
            # The same fd number now holds a pidfd of a different, innocent process.
            innocent = pidfd.open_pidfd(other.pid)
            if innocent != number:
                os.dup2(innocent, number)
                os.close(innocent)
            try:
                gate.set()
                reaper.submit(lambda: None).result(10)  # the late job has run by now
                assert other.poll() is None, "the innocent process was signalled"
            finally:
                os.close(number)
        assert victim.wait(10) == -signal.SIGKILL  # the job's own fd: the chosen victim
    finally:
        gate.set()
        for proc in (victim, other):
            proc.kill()
            proc.wait(10)


def test_restart_returns_without_waiting_for_the_new_thread() -> None:
    """restart() is called on the loop: it must not wait for the new thread to initialise
    (seam: the initialiser waits on a gate); jobs run once it has."""
    with Reaper() as reaper:
        gate = threading.Event()
        initialize = reaper._initialize

        def slow_initialize() -> ThreadInfo:
            gate.wait(30)
            return initialize()

        reaper._initialize = slow_initialize  # type: ignore[method-assign]

        async def restart_on_the_loop() -> bool:
            reaper.restart()
            answered = not gate.is_set()  # we are back while the new thread still waits
            gate.set()
            return answered and await reaper.ping(10)

        try:
            assert asyncio.run(restart_on_the_loop())
        finally:
            gate.set()
        assert reaper.restarts == 1


def test_sigterm_ends_the_daemon_while_the_reaper_is_stuck_in_mrelease(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path
) -> None:
    """A reaper thread stuck in process_mrelease (seam: the call blocks for ever) does not
    keep SIGTERM from ending the daemon within its 5 s budget."""
    config = write_config(
        tmp_path / "p.toml",
        scope_config(scratch.path, scratch.memcg_path) + "\n[watchdog]\nenabled = false\n",
    )
    daemon = Daemon(config)
    daemon.argv[1:3] = ["-c", STUCK_MRELEASE_LAUNCHER]  # python -c LAUNCHER run ...
    with daemon:
        daemon.wait_for("controller.ready", 30)
        thrasher = scratch.spawn_workload("thrash", thrash_file)
        daemon.wait_for("policy.decided", 60)
        # SIGKILL went out; the thread is now blocked in mrelease for good.
        assert thrasher.wait(10) == -signal.SIGKILL
        sent = time.monotonic()
        assert daemon.stop(5) == 0
        print(f"exit {time.monotonic() - sent:.2f} s after SIGTERM with a stuck reaper")


STUCK_MRELEASE_LAUNCHER = (
    "import sys, threading\n"
    "from pressured.kernel import pidfd\n"
    "pidfd.set_mrelease_call(lambda fd, flags: threading.Event().wait() and 0)\n"
    "from pressured.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
