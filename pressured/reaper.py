"""The reaper: one dedicated thread, pinned to chosen CPUs, that sends SIGKILL through a pidfd
and calls ``process_mrelease`` immediately after, with nothing in between.

Why one thread does both: once the killed victim reaches its own exit it detaches its mm and
mrelease answers ESRCH; from then on the memory is freed at the *victim's* pace, which for a
CPU-starved victim means seconds to minutes (docs/design.md, "The ESRCH race"). Handing the pidfd
from the signalling thread to another between the two calls widens that window.

The thread is created when the reaper starts (before the first pressure event: creating a
thread under memory pressure is the allocation we least want), and its affinity is set and
read back from inside it.

Each job owns the file descriptors it acts on: the caller hands it ``dup``s, and the job
closes them on the reaper thread when it is done (or discarded). A caller that gives up on a
job (timeout, cancellation at SIGHUP or stop) closes only its own descriptors, so a job that
starts late can never signal whatever process a recycled fd *number* now refers to.

The worker is a plain daemon thread with its own queue, not a ThreadPoolExecutor: the
interpreter joins pool threads at exit, so one stuck in ``process_mrelease`` would hang the
daemon's exit for ever. A stuck thread is abandoned (never joined) when it is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
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


def kill_and_release_all(
    members: Sequence[tuple[int, int]],
    *,
    retries: int = 3,
    boost_on_esrch: bool = True,
) -> tuple[ReapOutcome, ...]:
    """SIGKILL every member first (so none keeps allocating while another is reaped), then
    mrelease each in the order given (the caller puts the largest first)."""
    sent: list[tuple[int, int, int]] = []
    outcomes: list[ReapOutcome] = []
    for pid, fd in members:
        try:
            pidfd_mod.send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            outcomes.append(
                ReapOutcome(pid, False, "exited before the signal", time.monotonic_ns(), None, None)
            )
            continue
        except OSError as exc:
            outcomes.append(
                ReapOutcome(pid, False, f"{exc.strerror}", time.monotonic_ns(), None, None)
            )
            continue
        sent.append((pid, fd, time.monotonic_ns()))
    for pid, fd, signal_ns in sent:
        result = mrelease_with_retries(fd, retries)
        reaped_ns = time.monotonic_ns() if result.ok else None
        boosted = False
        if result.status is MreleaseStatus.GONE and boost_on_esrch:
            boosted = boost_victim(pid)
        outcomes.append(ReapOutcome(pid, True, None, signal_ns, result, reaped_ns, boosted))
    return tuple(outcomes)


def dup_all(fds: Iterable[int]) -> list[int]:
    """``os.dup`` each fd (close-on-exec); on failure close the ones already made."""
    copies: list[int] = []
    try:
        for fd in fds:
            copies.append(os.dup(fd))
    except BaseException:
        for copy in copies:
            pidfd_mod.close_quietly(copy)
        raise
    return copies


class _Job:
    """A unit of reaper work and the fds it owns (closed once it ran or was discarded)."""

    __slots__ = ("fds", "future", "work")

    def __init__(self, work: Callable[[], object], fds: Sequence[int]) -> None:
        self.work = work
        self.fds = tuple(fds)
        self.future: Future[object] = Future()

    def run(self, counted: Callable[[], None]) -> None:
        """Run the work unless its caller gave up; ``counted`` runs before the result is
        published, so a caller woken by it sees the reaper's counters up to date."""
        try:
            if not self.future.set_running_or_notify_cancel():
                counted()
                return  # its caller gave up before it started: do nothing at all
            try:
                result = self.work()
            except BaseException as exc:  # the caller sees it through the future
                self._close()
                counted()
                self.future.set_exception(exc)
            else:
                self._close()
                counted()
                self.future.set_result(result)
        finally:
            self._close()

    def discard(self) -> None:
        self.future.cancel()
        self._close()

    def _close(self) -> None:
        fds, self.fds = self.fds, ()
        for fd in fds:
            pidfd_mod.close_quietly(fd)


class _Worker:
    """One reaper thread and its queue; replaced whole when the thread is stuck or dead."""

    def __init__(self, reaper: Reaper, number: int) -> None:
        self.reaper = reaper
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.ready = threading.Event()
        self.info: ThreadInfo | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, name=f"pressured-reaper-{number}", daemon=True
        )

    def _run(self) -> None:
        try:
            self.info = self.reaper._initialize()
        except BaseException as exc:  # reported by start(); the thread ends
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        while True:
            job = self.jobs.get()
            if job is None:
                return
            job.run(lambda: self.reaper._done(self))

    def drain(self) -> None:
        """Discard every job still queued (their fds are closed, their futures cancelled)."""
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.discard()


class Reaper:
    """A single pinned worker thread for kill+mrelease jobs, shared by whoever needs it.

    ``cpus`` empty means every CPU this process may use; the thread's affinity is set with
    ``sched_setaffinity(0, ...)`` inside the thread (Linux applies it to the calling thread
    only) and read back there. ``start()`` creates the thread at once and waits for it;
    ``restart()`` replaces it without waiting (it is called from the event loop).
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
        self._worker: _Worker | None = None
        self._numbers = itertools.count(1)
        self._pending = 0
        self._lock = threading.Lock()
        self.jobs_done = 0
        self.restarts = 0

    # -- lifecycle ------------------------------------------------------------------------
    def _initialize(self) -> ThreadInfo:
        """Runs inside the new thread: pin it, renice it, report what it sees."""
        os.sched_setaffinity(0, self.requested_cpus)
        if self.nice is not None:
            # Nice is per thread on Linux: PRIO_PROCESS with who=0 means this thread.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, self.nice)
        info = ThreadInfo(
            native_id=threading.get_native_id(),
            cpus=frozenset(os.sched_getaffinity(0)),
            nice=os.getpriority(os.PRIO_PROCESS, 0),
        )
        if info.cpus != self.requested_cpus:
            log.error(
                "reaper.affinity_mismatch",
                cpus=sorted(info.cpus),
                requested=sorted(self.requested_cpus),
            )
        return info

    def _spawn(self) -> _Worker:
        worker = _Worker(self, next(self._numbers))
        worker.thread.start()
        self._worker = worker
        return worker

    def start(self) -> ThreadInfo:
        """Create the thread now and return what it reported from inside itself."""
        worker = self._worker or self._spawn()
        if not worker.ready.wait(timeout=10):
            raise RuntimeError("reaper thread did not initialise within 10 s")
        if worker.error is not None:
            raise RuntimeError(f"reaper thread failed to initialise: {worker.error!r}")
        info = worker.info
        if info is None:
            raise RuntimeError("reaper thread did not initialise")
        if info.cpus != self.requested_cpus:
            raise RuntimeError(
                f"reaper thread affinity is {sorted(info.cpus)}, asked for "
                f"{sorted(self.requested_cpus)}"
            )
        return info

    def thread_info(self) -> ThreadInfo | None:
        return self._worker.info if self._worker is not None else None

    def wait_ready(self, timeout_s: float = 10.0) -> ThreadInfo | None:
        """Block until the current thread has initialised (tests, start-up); its info."""
        worker = self._worker
        if worker is None or not worker.ready.wait(timeout_s):
            return None
        return worker.info

    def restart(self) -> None:
        """Replace the worker thread (after it was found stuck or dead), without waiting.

        Called on the event loop, so it never blocks: the new thread initialises on its own
        and takes jobs as soon as it has. The old one is abandoned: jobs still queued behind
        it are discarded (fds closed, futures cancelled); a job it is stuck in keeps its own
        fds and closes them if it ever returns.
        """
        old = self._worker
        with self._lock:
            self._pending = 0
        self.restarts += 1
        worker = self._spawn()
        if old is not None:
            old.drain()
            old.jobs.put(None)
        log.warning("reaper.restarted", restarts=self.restarts, thread=worker.thread.name)

    def close(self, wait: bool = True, timeout_s: float = 5.0) -> None:
        """Stop the thread after the jobs already queued; with ``wait``, join it for at most
        ``timeout_s`` (a thread stuck in the kernel is a daemon thread: it never holds up
        the process's exit)."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.jobs.put(None)
        if wait and worker.thread is not threading.current_thread():
            worker.thread.join(timeout_s)

    def __enter__(self) -> Reaper:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- jobs -----------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, job: Callable[[], object], fds: Sequence[int] = ()) -> Future[object]:
        """Queue ``job``; it owns ``fds`` from now on (closed after it ran, or when it is
        refused or discarded)."""
        owned = _Job(job, fds)
        worker = self._worker
        if worker is None:
            owned.discard()
            raise RuntimeError("reaper is not started")
        with self._lock:
            if self._pending >= self.queue_size:
                owned.discard()
                raise ReaperBusy(f"reaper queue full ({self.queue_size} jobs)")
            self._pending += 1
        worker.jobs.put(owned)
        return owned.future

    def _done(self, worker: _Worker) -> None:
        with self._lock:
            if worker is self._worker:
                self._pending = max(0, self._pending - 1)
            self.jobs_done += 1

    async def _await(self, future: Future[object]) -> object:
        # Cancelling the wrapper cancels the job if it has not started: a job nobody waits
        # for any more does nothing (and its fds are closed by the reaper thread).
        return await asyncio.wrap_future(future)

    async def kill(self, pid: int, pidfd: int, sig: int = signal.SIGKILL) -> ReapOutcome:
        """Queue signal+mrelease for one process; the loop never blocks on the thread.

        The job gets its own dup of ``pidfd``: the caller may close its fd at any time."""
        (own,) = dup_all((pidfd,))
        future = self.submit(
            lambda: kill_and_release(
                pid, own, retries=self.retries, boost_on_esrch=self.boost_on_esrch, sig=sig
            ),
            (own,),
        )
        outcome = await self._await(future)
        assert isinstance(outcome, ReapOutcome)  # noqa: S101 - our own job's return type
        return outcome

    async def kill_all(self, members: Sequence[tuple[int, int]]) -> tuple[ReapOutcome, ...]:
        """SIGKILL every (pid, pidfd), then mrelease each, on the thread (a process family)."""
        owned = dup_all(fd for _, fd in members)
        pairs = [(pid, own) for (pid, _), own in zip(members, owned, strict=True)]
        future = self.submit(
            lambda: kill_and_release_all(
                pairs, retries=self.retries, boost_on_esrch=self.boost_on_esrch
            ),
            owned,
        )
        outcomes = await self._await(future)
        assert isinstance(outcomes, tuple)  # noqa: S101 - our own job's return type
        return outcomes

    async def kill_group(
        self, group: Cgroup, members: Sequence[tuple[int, int]]
    ) -> GroupReapOutcome:
        """``cgroup.kill``, then mrelease each given (pid, pidfd) on the thread."""
        owned = dup_all(fd for _, fd in members)
        pairs = [(pid, own) for (pid, _), own in zip(members, owned, strict=True)]
        future = self.submit(
            lambda: kill_and_release_group(
                group, pairs, retries=self.retries, boost_on_esrch=self.boost_on_esrch
            ),
            owned,
        )
        outcome = await self._await(future)
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
                return bool(await self._await(future))
        except TimeoutError:
            return False
