"""Command lines read where a hung process cannot hold the scan.

``/proc/PID/cmdline`` is the one file the scan needs that the kernel generates under the
target's mmap_lock (``access_remote_vm``): a process whose address space is locked by a
stuck fault (hung FUSE or NFS) blocks the reader for as long as the fault lasts. So command
lines are read here, on a thread of this reader's own, and each read gets a time limit: a
read that overruns leaves its thread behind (abandoned: it exits once the kernel lets go) and
the next read gets a fresh thread. At most ``max_stuck`` threads may hang at once; past that,
command lines are simply not read (``cmdline_known`` False) until one comes back.

Results are cached per process identity ``(pid, start_time)``: a command line is fixed by
exec and changed afterwards only by a process rewriting its own argv. Entries older than
``max_age_s`` are read again when a scan next needs them (on the episode's schedule: nothing
here runs on a timer), and the cache is bounded by total bytes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from pressured.kernel import procfs

log = structlog.get_logger("pressured.scan.cmdline")

Identity = tuple[int, int]
Cmdline = tuple[str, bool]
"""(text, truncated), as :func:`pressured.kernel.procfs.read_cmdline` returns it."""
ReadCmdline = Callable[[int, str, int], Cmdline]


@dataclass
class _Batch:
    """Identities for one worker to read in order; results appear as they are read."""

    pids: list[Identity]
    results: dict[Identity, Cmdline | None] = field(default_factory=dict)
    position: int = 0
    abandoned: bool = False


class _Worker(threading.Thread):
    def __init__(self, reader: CmdlineReader, number: int) -> None:
        super().__init__(name=f"pressured-cmdline-{number}", daemon=True)
        self.reader = reader
        self.batch: _Batch | None = None
        self.retired = False

    def run(self) -> None:
        reader = self.reader
        while True:
            with reader._cond:
                while self.batch is None and not self.retired:
                    reader._cond.wait()
                if self.retired:
                    return
                batch = self.batch
            if batch is None:
                continue
            for identity in batch.pids:
                try:
                    value: Cmdline | None = reader._read(
                        identity[0], reader.proc_root, reader.limit
                    )
                except OSError:
                    value = None  # gone, or unreadable: the record says cmdline unknown
                with reader._cond:
                    if batch.abandoned:
                        # This was the read that overran: the process is readable again.
                        reader._stuck_ids.discard(identity)
                        if value is not None:
                            reader._store(identity, value)
                        break
                    batch.results[identity] = value
                    batch.position += 1
                    reader._cond.notify_all()
            with reader._cond:
                if self.batch is batch:
                    self.batch = None
                reader._cond.notify_all()
                if self.retired:
                    return


class CmdlineReader:
    """Command lines with a time limit per read, on threads a stuck read cannot take from
    the scan. Thread-safe; one instance per scope."""

    def __init__(
        self,
        *,
        proc_root: str = "/proc",
        limit: int = procfs.DEFAULT_CMDLINE_LIMIT,
        timeout_s: float = 0.2,
        max_stuck: int = 4,
        max_age_s: float = 300.0,
        cache_bytes: int = 1 << 20,
        read: ReadCmdline = procfs.read_cmdline,
    ) -> None:
        self.proc_root = proc_root
        self.limit = limit
        self.timeout_s = timeout_s
        self.max_stuck = max_stuck
        self.max_age_s = max_age_s
        self.cache_bytes = cache_bytes
        self._read = read
        self._cond = threading.Condition()
        self._cache: OrderedDict[Identity, tuple[Cmdline, float]] = OrderedDict()
        self._cached_bytes = 0
        self._stuck: list[_Worker] = []
        self._stuck_ids: set[Identity] = set()
        """Identities whose read is still blocked on an abandoned thread: not read again
        (each would only block one more thread) until that read returns."""
        self._spawned = 0
        self.timeouts = 0
        self._worker: _Worker | None = self._new_worker()

    def _new_worker(self) -> _Worker | None:
        self._stuck = [worker for worker in self._stuck if worker.is_alive()]
        if len(self._stuck) >= self.max_stuck:
            return None
        self._spawned += 1
        worker = _Worker(self, self._spawned)
        worker.start()
        return worker

    @property
    def stuck_threads(self) -> int:
        """Abandoned threads still blocked in a read (each holds one stuck process's read)."""
        with self._cond:
            return sum(1 for worker in self._stuck if worker.is_alive())

    @property
    def cache_entries(self) -> int:
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        return self._cached_bytes

    def cached(self, identity: Identity) -> Cmdline | None:
        entry = self._cache.get(identity)
        if entry is None or time.monotonic() - entry[1] > self.max_age_s:
            return None
        return entry[0]

    def _store(self, identity: Identity, value: Cmdline) -> None:
        old = self._cache.pop(identity, None)
        if old is not None:
            self._cached_bytes -= len(old[0][0])
        self._cache[identity] = (value, time.monotonic())
        self._cached_bytes += len(value[0])
        while self._cached_bytes > self.cache_bytes and self._cache:
            _identity, (evicted, _when) = self._cache.popitem(last=False)
            self._cached_bytes -= len(evicted[0])

    def read_many(
        self, identities: Sequence[Identity], deadline: float | None = None
    ) -> dict[Identity, Cmdline | None]:
        """Command lines of ``identities`` (None: not read in time, or unreadable).

        Returns by ``deadline`` (a :func:`time.monotonic` value) at the latest, and a single
        read that takes longer than ``timeout_s`` is given up (its thread abandoned)."""
        out: dict[Identity, Cmdline | None] = {}
        missing: list[Identity] = []
        with self._cond:
            for identity in identities:
                if identity in self._stuck_ids:
                    out[identity] = None
                    continue
                value = self.cached(identity)
                if value is not None:
                    self._cache.move_to_end(identity)
                    out[identity] = value
                else:
                    missing.append(identity)
        while missing:
            missing = self._read_batch(missing, out, deadline)
        return out

    def _read_batch(
        self, pids: list[Identity], out: dict[Identity, Cmdline | None], deadline: float | None
    ) -> list[Identity]:
        """Read ``pids`` on the current worker; returns the ones left for a fresh worker."""
        with self._cond:
            worker = self._worker
            if worker is None or not worker.is_alive():
                worker = self._worker = self._new_worker()
            if worker is None:
                out.update(dict.fromkeys(pids))  # too many stuck threads: read none
                return []
            batch = _Batch(list(pids))
            worker.batch = batch
            self._cond.notify_all()
            last_position, last_progress = 0, time.monotonic()
            while batch.position < len(batch.pids):
                now = time.monotonic()
                limit = last_progress + self.timeout_s
                if deadline is not None:
                    limit = min(limit, deadline)
                if now >= limit:
                    break
                self._cond.wait(limit - now)
                if batch.position != last_position:
                    last_position, last_progress = batch.position, time.monotonic()
            for identity, value in batch.results.items():
                out[identity] = value
                if value is not None:
                    self._store(identity, value)
            if batch.position >= len(batch.pids):
                return []
            # The read in progress overran: leave that thread to the kernel, carry on
            # without it. The identity it is stuck on is not retried in this scan.
            batch.abandoned = True
            worker.retired = True
            self._stuck.append(worker)
            self._worker = None
            self.timeouts += 1
            stuck = batch.pids[batch.position]
            out[stuck] = None
            self._stuck_ids.add(stuck)
            rest = batch.pids[batch.position + 1 :]
            past_deadline = deadline is not None and time.monotonic() >= deadline
        log.warning(
            "scan.cmdline_stuck",
            pid=stuck[0],
            timeout_ms=round(self.timeout_s * 1000, 1),
            stuck_threads=len(self._stuck),
            detail="reading /proc/PID/cmdline overran (the process's mmap_lock is held?): "
            "its reader thread is abandoned",
        )
        if past_deadline:
            out.update(dict.fromkeys(rest))
            return []
        return rest

    def close(self) -> None:
        """Let the idle worker exit (a stuck one exits when its read returns)."""
        with self._cond:
            if self._worker is not None:
                self._worker.retired = True
                self._worker = None
            self._cond.notify_all()


_shared: dict[str, CmdlineReader] = {}
_shared_lock = threading.Lock()


def shared_reader(proc_root: str = "/proc") -> CmdlineReader:
    """One process-wide reader per proc root, made on first use: what a caller that brings
    no reader of its own (the watchdog, ``pressured rank``) gets, so no caller reads a
    command line on its own thread by default."""
    with _shared_lock:
        reader = _shared.get(proc_root)
        if reader is None:
            reader = _shared[proc_root] = CmdlineReader(proc_root=proc_root)
        return reader
