"""The reaper: one dedicated thread, pinned to chosen CPUs, that sends SIGKILL through a pidfd
and calls ``process_mrelease`` immediately after, with nothing in between.

Why one thread does both: once the killed victim reaches its own exit it detaches its mm and
mrelease answers ESRCH; from then on the memory is freed at the *victim's* pace, which for a
CPU-starved victim means seconds to minutes (DESIGN.md, "The ESRCH race"). Handing the pidfd
from the signalling thread to another between the two calls widens that window.

The thread is created when the reaper starts (before the first pressure event: creating a
thread under memory pressure is the allocation we least want), and its affinity is set and
read back from inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from pressured.kernel import pidfd as pidfd_mod
from pressured.kernel.cgroupfs import Cgroup
from pressured.kernel.pidfd import MreleaseResult, MreleaseStatus

log = structlog.get_logger("pressured.reaper")

_RETRYABLE = (MreleaseStatus.PARTIAL, MreleaseStatus.INTERRUPTED)


class ReaperBusy(RuntimeError):
    """The reaper's queue is full: the caller should not wait behind it."""


@dataclass(frozen=True, slots=True)
class ReapOutcome:
    """What the reaper thread did for one process."""

    pid: int
    signalled: bool
    signal_error: str | None
    signal_ns: int
    """``time.monotonic_ns()`` right after the signal was sent."""
    mrelease: MreleaseResult | None
    reaped_ns: int | None
    """``time.monotonic_ns()`` when mrelease returned successfully."""
    boosted: bool = False
    """The victim was reniced / taken out of SCHED_IDLE after losing the ESRCH race."""

    @property
    def signal_to_reaped_ms(self) -> float | None:
        if self.reaped_ns is None:
            return None
        return (self.reaped_ns - self.signal_ns) / 1e6


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    native_id: int
    cpus: frozenset[int]
    nice: int


def boost_victim(pid: int) -> bool:
    """Help a dying victim run so it frees its own memory sooner (lmkd does the same)."""
    boosted = False
    with contextlib.suppress(OSError):
        if os.sched_getscheduler(pid) in (os.SCHED_IDLE, os.SCHED_BATCH):
            os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
            boosted = True
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, -20)
        boosted = True
    return boosted


def mrelease_with_retries(pidfd: int, retries: int) -> MreleaseResult:
    """process_mrelease, retried on EAGAIN/EINTR up to ``retries`` more times."""
    total_ns = 0
    attempts = 0
    while True:
        attempts += 1
        result = pidfd_mod.process_mrelease(pidfd)
        total_ns += result.duration_ns
        if result.status not in _RETRYABLE or attempts > retries:
            return MreleaseResult(result.status, result.errno, total_ns, attempts)


def kill_and_release(
    pid: int,
    pidfd: int,
    *,
    retries: int = 3,
    boost_on_esrch: bool = True,
    sig: int = signal.SIGKILL,
) -> ReapOutcome:
    """Signal then mrelease, back to back, on the calling thread. Never raises for the
    victim's state (gone, not dying): that is reported in the outcome."""
    try:
        pidfd_mod.send_signal(pidfd, sig)
    except ProcessLookupError:
        return ReapOutcome(pid, False, "exited before the signal", time.monotonic_ns(), None, None)
    except OSError as exc:
        return ReapOutcome(pid, False, f"{exc.strerror}", time.monotonic_ns(), None, None)
    signal_ns = time.monotonic_ns()
    result = mrelease_with_retries(pidfd, retries)
    reaped_ns = time.monotonic_ns() if result.ok else None
    boosted = False
    if result.status is MreleaseStatus.GONE and boost_on_esrch:
        boosted = boost_victim(pid)
    return ReapOutcome(pid, True, None, signal_ns, result, reaped_ns, boosted)


@dataclass(frozen=True, slots=True)
class GroupReapOutcome:
    path: str
    killed: bool
    kill_error: str | None
    signal_ns: int
    members: tuple[ReapOutcome, ...] = field(default=())


def kill_and_release_group(
    group: Cgroup,
    members: Sequence[tuple[int, int]],
    *,
    retries: int = 3,
    boost_on_esrch: bool = True,
) -> GroupReapOutcome:
    """``cgroup.kill`` then mrelease every member pidfd (opened beforehand by the caller)."""
    try:
        group.kill()
    except OSError as exc:
        return GroupReapOutcome(group.path, False, str(exc), time.monotonic_ns())
    signal_ns = time.monotonic_ns()
    outcomes = []
    for pid, fd in members:
        result = mrelease_with_retries(fd, retries)
        reaped_ns = time.monotonic_ns() if result.ok else None
        boosted = False
        if result.status is MreleaseStatus.GONE and boost_on_esrch:
            boosted = boost_victim(pid)
        outcomes.append(ReapOutcome(pid, True, None, signal_ns, result, reaped_ns, boosted))
    return GroupReapOutcome(group.path, True, None, signal_ns, tuple(outcomes))


class Reaper:
    """A single pinned worker thread for kill+mrelease jobs, shared by whoever needs it.

    ``cpus`` empty means every CPU this process may use; the thread's affinity is set with
    ``sched_setaffinity(0, ...)`` inside the thread (Linux applies it to the calling thread
    only) and read back there. ``start()`` creates the thread at once and waits for it.
    """

    def __init__(
        self,
        *,
        cpus: Iterable[int] = (),
        nice: int | None = None,
        queue_size: int = 32,
        retries: int = 3,
        boost_on_esrch: bool = True,
    ) -> None:
        self.requested_cpus = frozenset(cpus) or frozenset(os.sched_getaffinity(0))
        self.nice = nice
        self.queue_size = queue_size
        self.retries = retries
        self.boost_on_esrch = boost_on_esrch
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0
        self._lock = threading.Lock()
        self._info: ThreadInfo | None = None
        self.jobs_done = 0
        self.restarts = 0

    # -- lifecycle ------------------------------------------------------------------------
    def _initialize(self) -> None:
        os.sched_setaffinity(0, self.requested_cpus)
        if self.nice is not None:
            # Nice is per thread on Linux: PRIO_PROCESS with who=0 means this thread.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, self.nice)
        self._info = ThreadInfo(
            native_id=threading.get_native_id(),
            cpus=frozenset(os.sched_getaffinity(0)),
            nice=os.getpriority(os.PRIO_PROCESS, 0),
        )

    def start(self) -> ThreadInfo:
        """Create the thread now and return what it reported from inside itself."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="pressured-reaper", initializer=self._initialize
            )
        info = self._executor.submit(self.thread_info).result(timeout=10)
        if info is None:
            raise RuntimeError("reaper thread did not initialise")
        if info.cpus != self.requested_cpus:
            raise RuntimeError(
                f"reaper thread affinity is {sorted(info.cpus)}, asked for "
                f"{sorted(self.requested_cpus)}"
            )
        return info

    def thread_info(self) -> ThreadInfo | None:
        return self._info

    def restart(self) -> ThreadInfo:
        """Replace the worker thread (after it was found stuck or dead)."""
        old = self._executor
        self._executor = None
        self._info = None
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
        self.restarts += 1
        with self._lock:
            self._pending = 0
        info = self.start()
        log.warning("reaper.restarted", restarts=self.restarts, thread=info.native_id)
        return info

    def close(self, wait: bool = True) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=not wait)
            self._executor = None

    def __enter__(self) -> Reaper:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- jobs -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, job: Callable[[], object]) -> Future[object]:
        if self._executor is None:
            raise RuntimeError("reaper is not started")
        with self._lock:
            if self._pending >= self.queue_size:
                raise ReaperBusy(f"reaper queue full ({self.queue_size} jobs)")
            self._pending += 1
        future = self._executor.submit(job)
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: Future[object]) -> None:
        with self._lock:
            self._pending = max(0, self._pending - 1)
            self.jobs_done += 1

    async def kill(self, pid: int, pidfd: int, sig: int = signal.SIGKILL) -> ReapOutcome:
        """Queue signal+mrelease for one process; the loop never blocks on the thread."""
        future = self.submit(
            lambda: kill_and_release(
                pid, pidfd, retries=self.retries, boost_on_esrch=self.boost_on_esrch, sig=sig
            )
        )
        outcome = await asyncio.wrap_future(future)
        assert isinstance(outcome, ReapOutcome)  # noqa: S101 - our own job's return type
        return outcome

    async def kill_group(
        self, group: Cgroup, members: Sequence[tuple[int, int]]
    ) -> GroupReapOutcome:
        future = self.submit(
            lambda: kill_and_release_group(
                group, members, retries=self.retries, boost_on_esrch=self.boost_on_esrch
            )
        )
        outcome = await asyncio.wrap_future(future)
        assert isinstance(outcome, GroupReapOutcome)  # noqa: S101 - our own job's return type
        return outcome

    async def ping(self, timeout_s: float = 1.0) -> bool:
        """True when the thread runs a trivial job within ``timeout_s`` (health checks)."""
        try:
            future = self.submit(lambda: True)
        except (ReaperBusy, RuntimeError):
            return False
        try:
            async with asyncio.timeout(timeout_s):
                return bool(await asyncio.wrap_future(future))
        except TimeoutError:
            return False
