"""Growth needs history: a bounded, per-scope store of cheap process samples between snapshots.

Each snapshot's records leave a :class:`~pressured.snapshot.ProcessSample` (RSS, minor and
major faults, when) keyed by the process's identity ``(pid, start_time)``; the next snapshot
gets them as :attr:`Snapshot.previous`, and policies take rates from the difference.

The **first event of an episode** usually finds no useful history: the last snapshot may be
minutes old (its rates would average a long quiet time with the burst that matters) or there
may be none. Then :meth:`ProcessHistory.complete` takes a short second sample itself: it waits
``resample_s`` (100 ms by default) and reads ``/proc/PID/stat`` of the scope's candidates
again (one small read each, no mmap lock), so the policy sees what each process did in those
100 ms. That costs the first decision of an episode ``resample_s`` plus about 10 us per
process (``benchmarks/victims.py`` prints it); decisions later in the episode use the previous
snapshot and pay nothing.

A scan that reads ``/proc/PID/stat`` of every process for a family policy
(:mod:`pressured.scan.families`) takes its rates itself, against the stat reading it keeps
from the previous event (or a second reading of everyone when none is recent): such a
snapshot (``rates_sampled``) is only remembered here.

Runs on the I/O worker thread, like the scan.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pressured.kernel.procfs import PAGE_SIZE, ProcessRecord, parse_stat, start_ticks_at
from pressured.scan.kept import BORN_SINCE_MARGIN_NS
from pressured.snapshot import ProcessSample, Snapshot

Identity = tuple[int, int]

MAX_ENTRIES = 65_536
"""Samples kept per generation at most (the largest processes win): bounds the memory."""
MIN_INTERVAL_S = 0.1
"""A generation younger than this gives rates too noisy to rank on."""
STALE_AFTER_S = 5.0
"""A generation older than this averages too much quiet time: sample afresh instead."""
RESAMPLE_S = MIN_INTERVAL_S
"""How long the short second sample waits when history is missing or stale: the shortest
interval rates are taken over from kept history, no longer (it was 200 ms: the first event
after a quiet spell waited twice what a kept reading needs)."""
GENERATIONS = 3


@dataclass(frozen=True, slots=True)
class Generation:
    taken_ns: int
    samples: Mapping[Identity, ProcessSample]


def sample_of(record: ProcessRecord, monotonic_ns: int) -> ProcessSample:
    return ProcessSample(record.rss_bytes, record.minflt, record.majflt, monotonic_ns)


def read_sample(pid: int, proc_root: str = "/proc") -> tuple[int, ProcessSample] | None:
    """(start_time, sample) from one read of ``/proc/PID/stat``, or None if it is gone."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as handle:
            data = handle.read(4096)
        stat = parse_stat(data)
    except (OSError, ValueError):
        return None
    sample = ProcessSample(
        stat.rss_pages * PAGE_SIZE, stat.minflt, stat.majflt, time.monotonic_ns()
    )
    return stat.start_time, sample


def with_newborns(
    generation: Generation, candidates: tuple[ProcessRecord, ...]
) -> Mapping[Identity, ProcessSample]:
    """The generation's samples, plus one of no faults and present size for each candidate
    born after it: all its faulting happened within the interval, and a process that started
    thrashing after the last snapshot must not rank as "no earlier sample" (the fast path's
    rule too: :func:`pressured.scan.families.newborn_sample`)."""
    born_after = start_ticks_at(generation.taken_ns - BORN_SINCE_MARGIN_NS)
    newborns = {
        p.identity: ProcessSample(p.rss_bytes, 0, 0, generation.taken_ns)
        for p in candidates
        if p.identity not in generation.samples and p.start_time >= born_after
    }
    if not newborns:
        return generation.samples
    return MappingProxyType({**generation.samples, **newborns})


def measure(
    members: tuple[ProcessRecord, ...],
    previous: Mapping[tuple[int, int], ProcessSample],
    now_ns: int,
) -> tuple[float, float, float, float | None]:
    """(fault bytes/s, growth bytes/s, majflt/s, interval s) over the members with samples:
    the rates culprit ranks on and an episode recheck is checked against."""
    faults = growth = majflt = 0
    oldest_ns: int | None = None
    sampled = 0
    for member in members:
        before = previous.get(member.identity)
        if before is None:
            continue
        sampled += 1
        faults += max(0, member.minflt - before.minflt) + max(0, member.majflt - before.majflt)
        majflt += max(0, member.majflt - before.majflt)
        growth += member.rss_bytes - before.rss_bytes
        oldest_ns = (
            before.monotonic_ns if oldest_ns is None else min(oldest_ns, before.monotonic_ns)
        )
    if not sampled or oldest_ns is None or now_ns <= oldest_ns:
        return 0.0, 0.0, 0.0, None
    interval = (now_ns - oldest_ns) / 1e9
    return faults * PAGE_SIZE / interval, growth / interval, majflt / interval, interval


class ProcessHistory:
    """The last few snapshots' samples for one scope, and the short resample when they are
    missing or stale."""

    def __init__(
        self,
        *,
        proc_root: str = "/proc",
        resample_s: float = RESAMPLE_S,
        min_interval_s: float = MIN_INTERVAL_S,
        stale_after_s: float = STALE_AFTER_S,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.proc_root = proc_root
        self.resample_s = resample_s
        self.min_interval_ns = int(min_interval_s * 1e9)
        self.stale_after_ns = int(stale_after_s * 1e9)
        self.max_entries = max_entries
        self.generations: deque[Generation] = deque(maxlen=GENERATIONS)
        self.resamples = 0
        """How many times a second sample was taken (for tests and benchmarks)."""
        self.last_resample_ns = 0
        """What the last second sample cost, sleep included."""

    def usable(self, now_ns: int) -> Generation | None:
        """The newest generation old enough to give steady rates and young enough to matter."""
        for generation in reversed(self.generations):
            age = now_ns - generation.taken_ns
            if self.min_interval_ns <= age <= self.stale_after_ns:
                return generation
        return None

    def remember(self, records: tuple[ProcessRecord, ...], taken_ns: int) -> None:
        kept = sorted(records, key=lambda r: r.rss_bytes, reverse=True)[: self.max_entries]
        samples = {r.identity: sample_of(r, taken_ns) for r in kept if not r.is_kernel_thread}
        self.generations.append(Generation(taken_ns, MappingProxyType(samples)))

    def complete(self, snapshot: Snapshot) -> Snapshot:
        """``snapshot`` with :attr:`Snapshot.previous` filled from history, or from a short
        second sample when history has nothing usable for its candidates; then remember it."""
        generation = self.usable(snapshot.taken_monotonic_ns)
        candidates = snapshot.candidates
        if snapshot.rates_sampled:
            # The scan took rates for every process from its stat skim (a family policy's
            # fast path): a second sample of the finalists alone would rank on other figures.
            completed = snapshot
        elif generation is not None and any(p.identity in generation.samples for p in candidates):
            completed = dataclasses.replace(
                snapshot, previous=with_newborns(generation, candidates)
            )
        elif candidates and self.resample_s > 0:
            completed = self._resample(snapshot)
        else:
            completed = snapshot
        self.remember(completed.processes, completed.taken_monotonic_ns)
        return completed

    def _resample(self, snapshot: Snapshot) -> Snapshot:
        """Wait ``resample_s``, read every candidate's stat again: the scan's figures become
        ``previous`` and the new ones the records'."""
        started = time.monotonic_ns()
        first = {p.identity: sample_of(p, snapshot.taken_monotonic_ns) for p in snapshot.candidates}
        time.sleep(self.resample_s)
        updated: dict[int, ProcessRecord] = {}
        for record in snapshot.candidates:
            read = read_sample(record.pid, self.proc_root)
            if read is None or read[0] != record.start_time:
                continue  # gone (or its PID reused): keep the scan's figures, no rate
            sample = read[1]
            updated[record.pid] = dataclasses.replace(
                record, rss_bytes=sample.rss_bytes, minflt=sample.minflt, majflt=sample.majflt
            )
        processes = tuple(updated.get(p.pid, p) for p in snapshot.processes)
        previous = {key: value for key, value in first.items() if key[0] in updated}
        self.resamples += 1
        self.last_resample_ns = time.monotonic_ns() - started
        return dataclasses.replace(
            snapshot,
            processes=processes,
            previous=MappingProxyType(previous),
            taken_monotonic_ns=time.monotonic_ns(),
        )
