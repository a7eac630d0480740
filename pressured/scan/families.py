"""The family phase of a two-phase scan: rank every family from one stat skim, read full
records family by family, best bound first, until the policy's top families are certain.

A :class:`~pressured.scan.plan.FamilyKey` policy (``culprit``) ranks families on demand (fault
and growth rates since an earlier sample) over size. ``/proc/PID/stat`` holds everything that
needs (ppid, process group, start time, resident pages, minor and major faults) and takes no
mmap lock, so one read per process (kept open between events, :mod:`pressured.scan.kept`)
places every process in its **stat family**: its ancestors and descendants linked through
parents in the same process group. Whatever eligibility removes (protection, adj -1000,
ignore patterns, omitted groups: only known from full records), each of the policy's families
lies inside one stat family, so the stat family's figures bound the policy's order of every
family inside it::

    demand       <= max(sum of faults, sum of the growths that are positive) / interval
    size         <= resident bytes + members x swap in use on the host
    (start, pid) <= the largest (start time, PID) among its members (the root's tie-break)

Stat families are read whole, in descending bound order, and ranked by the policy's own code;
reading stops once ``top`` eligible families are in hand whose order beats every bound left
unread (one that may still be the victim is always read). A thousand idle ``sleep``s of one
size tie on everything but the tie-break, which the bound carries, so they are not all read.
A whole stat family in hand is also what :func:`pressured.family.expand` needs to kill the
victim's family.

A process born after the earlier reading (a new PID, or a PID reused) did all its faulting
within the interval: it counts with its faults since birth and no growth (fork shares its
parent's pages, which would show as growth), as :class:`~pressured.history.ProcessHistory`
counts it after a full scan.

The rates' earlier sample is the newest kept stat reading 0.1 to 5 s old; where there is none
(the first event after a quiet spell, no kept files), the phase reads everyone's stat again
after ``resample_s``: the same second sample :mod:`pressured.history` takes after a full scan,
but for every process, so the ranking is the full scan's.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from pressured.kernel.procfs import (
    LINE_FLAGS,
    LINE_MAJFLT,
    LINE_MINFLT,
    LINE_PGID,
    LINE_PPID,
    LINE_RSS_PAGES,
    LINE_SID,
    LINE_START,
    LINE_STATE,
    PAGE_SIZE,
    PF_KTHREAD,
    ProcessRecord,
    ProcessSample,
    StatLine,
    counts_as_present,
)
from pressured.scan import skim as skim_module
from pressured.scan.kept import StatGeneration
from pressured.scan.plan import FamilyKey, FamilyOrder
from pressured.scan.reads import ReadProbe

Identity = tuple[int, int]
Bound = FamilyOrder
"""The :data:`FamilyOrder` that no family of the policy's inside a stat family can exceed: its
rule and demand, its size, and the largest (start time, PID) of its members (any root inside
is one of them, so ties in size are settled without reading them all)."""


def family_roots(lines: Mapping[int, StatLine], self_pid: int, families: bool) -> dict[int, int]:
    """The stat family root of every possible candidate (not a kernel thread, zombie, PID 1
    or ``self_pid``): a process belongs with its parent when both are candidates of one
    process group, and one with no such parent belongs with its group's leader when that is
    a candidate (adopted, as :func:`pressured.family.family_links` adopts; here regardless of
    protection, so a stat family holds every family the policy can make inside it)."""
    candidates = {
        pid: line
        for pid, line in lines.items()
        if not line[LINE_FLAGS] & PF_KTHREAD
        and line[LINE_STATE] != "Z"
        and pid not in (1, self_pid)
    }
    if not families:
        return {pid: pid for pid in candidates}

    def above(pid: int) -> int | None:
        line = candidates[pid]
        parent, pgid = line[LINE_PPID], line[LINE_PGID]
        up = candidates.get(parent)
        if up is not None and up[LINE_PGID] == pgid and parent != pid:
            return parent
        leader = candidates.get(pgid)
        if pgid != pid and leader is not None and leader[LINE_PGID] == pgid:
            return pgid
        return None

    root_of: dict[int, int] = {}
    for pid in candidates:
        chain: list[int] = []
        on_chain: set[int] = set()
        current = pid
        while current not in root_of:
            up = above(current)
            if up is None or up == current or up in on_chain:
                root_of[current] = current  # (a cycle of links ends here)
                break
            chain.append(current)
            on_chain.add(current)
            current = up
        root = root_of[current]
        for member in chain:
            root_of[member] = root
    return root_of


def stat_families(lines: Mapping[int, StatLine], self_pid: int, families: bool) -> list[list[int]]:
    """The stat families themselves (see :func:`family_roots`)."""
    grouped: dict[int, list[int]] = {}
    for pid, root in family_roots(lines, self_pid, families).items():
        grouped.setdefault(root, []).append(pid)
    return list(grouped.values())


def family_bounds(
    lines: Mapping[int, StatLine],
    root_of: Mapping[int, int],
    *,
    earlier: StatGeneration | None,
    now_ns: int,
    min_demand: float,
    swap_in_use: int,
    reads: Mapping[int, int] | None = None,
) -> list[tuple[Bound, list[int]]]:
    """Every stat family with what no family of the policy's inside it can exceed.
    ``reads``: storage reads in bytes per second by PID, where a read probe ran."""
    # Per family: [faults, positive growth, resident pages, members sampled, reads], members.
    sums: dict[int, tuple[list[int], list[int]]] = {}
    before_lines = earlier.lines if earlier is not None else {}
    born_after = earlier.born_after if earlier is not None else None
    read_rates = reads or {}
    for pid, root in root_of.items():
        line = lines[pid]
        entry = sums.get(root)
        if entry is None:
            entry = sums[root] = ([0, 0, 0, 0, 0], [])
        figures, members = entry
        members.append(pid)
        figures[2] += line[LINE_RSS_PAGES]
        figures[4] += read_rates.get(pid, 0)
        before = before_lines.get(pid)
        if before is None or before[LINE_START] != line[LINE_START]:
            if born_after is not None and line[LINE_START] >= born_after:
                figures[3] += 1
                figures[0] += line[LINE_MINFLT] + line[LINE_MAJFLT]
            continue
        figures[3] += 1
        figures[0] += max(0, line[LINE_MINFLT] - before[LINE_MINFLT]) + max(
            0, line[LINE_MAJFLT] - before[LINE_MAJFLT]
        )
        figures[1] += max(0, line[LINE_RSS_PAGES] - before[LINE_RSS_PAGES])
    timed = earlier is not None and now_ns > earlier.taken_ns
    # The policy's own arithmetic (pressured.history.measure), on sums that are at
    # least its own: the same float operations give a bound that holds exactly.
    interval = (now_ns - earlier.taken_ns) / 1e9 if earlier is not None and timed else 1.0
    bounded: list[tuple[Bound, list[int]]] = []
    for (faults, growth, rss, sampled, read), members in sums.values():
        size = rss * PAGE_SIZE + len(members) * swap_in_use
        rated = timed and sampled
        demand = max(faults * PAGE_SIZE / interval, growth * PAGE_SIZE / interval) if rated else 0
        demand = max(demand, read)  # whole bytes per second: a subset's sum is never more
        start, pid = max((lines[member][LINE_START], member) for member in members)
        if (rated or read) and demand >= min_demand:
            bounded.append(((1, demand, size, start, pid), members))
        else:
            bounded.append(((0, 0.0, size, start, pid), members))
    return bounded


def bounded_families(
    lines: Mapping[int, StatLine],
    earlier: StatGeneration | None,
    now_ns: int,
    *,
    self_pid: int,
    families: bool,
    min_demand: float,
    swap_in_use: int,
    reads: Mapping[int, int] | None = None,
) -> list[tuple[Bound, list[int]]]:
    """:func:`family_roots` and :func:`family_bounds` in one, highest bound first; natively
    where the optional extension is built (5 to 10 times faster) and no read probe ran."""
    native = skim_module.native_module()
    if skim_module.native_reads("stat") and not reads:
        timed = earlier is not None and now_ns > earlier.taken_ns
        interval = (now_ns - earlier.taken_ns) / 1e9 if earlier is not None and timed else 0.0
        result: list[tuple[Bound, list[int]]] = native.family_bounds(
            lines if isinstance(lines, dict) else dict(lines),
            None if earlier is None else earlier.lines,
            self_pid,
            families,
            PAGE_SIZE,
            interval,
            min_demand,
            swap_in_use,
            -1 if earlier is None else earlier.born_after,
        )
        return result
    bounded = family_bounds(
        lines,
        family_roots(lines, self_pid, families),
        earlier=earlier,
        now_ns=now_ns,
        min_demand=min_demand,
        swap_in_use=swap_in_use,
        reads=reads,
    )
    bounded.sort(key=lambda item: item[0], reverse=True)
    return bounded


def newborn_sample(record: ProcessRecord, taken_ns: int) -> ProcessSample:
    """The earlier sample of a process born after ``taken_ns``: no faults yet, and its present
    size (no growth: a forked child's shared pages are its parent's)."""
    return ProcessSample(record.rss_bytes, 0, 0, taken_ns)


def as_of_skim(record: ProcessRecord, line: StatLine | None) -> ProcessRecord:
    """The full record with the skim's figures (one picture for the rates and the bounds);
    unchanged where the skim did not see this process (or saw another with its PID)."""
    if line is None or line[LINE_START] != record.start_time:
        return record
    return replace(
        record,
        state=line[LINE_STATE],
        ppid=line[LINE_PPID],
        pgid=line[LINE_PGID],
        sid=line[LINE_SID],
        minflt=line[LINE_MINFLT],
        majflt=line[LINE_MAJFLT],
        rss_bytes=line[LINE_RSS_PAGES] * PAGE_SIZE,
    )


def samples_of(
    earlier: StatGeneration | None, records: Iterable[ProcessRecord]
) -> dict[Identity, ProcessSample]:
    """The earlier samples of ``records``: where the same process was seen then, and for a
    process born since, a sample of no faults and its present size (see the module's doc)."""
    if earlier is None:
        return {}
    born_after = earlier.born_after
    samples: dict[Identity, ProcessSample] = {}
    for record in records:
        before = earlier.lines.get(record.pid)
        if before is None or before[LINE_START] != record.start_time:
            if record.start_time >= born_after:
                samples[record.identity] = newborn_sample(record, earlier.taken_ns)
            continue
        samples[record.identity] = ProcessSample(
            before[LINE_RSS_PAGES] * PAGE_SIZE,
            before[LINE_MINFLT],
            before[LINE_MAJFLT],
            earlier.taken_ns,
        )
    return samples


@dataclass(slots=True)
class FamilyPhase:
    """What one family phase read: the full records are the reader's."""

    complete: bool = True
    victim_root: ProcessRecord | None = None
    """The root of the policy's best family, for the leaf cgroup check."""
    families_read: int = 0
    reads: dict[int, int] | None = None
    """Storage reads in bytes per second by PID, where a read probe ran (None: it did not)."""


def read_families(
    key: FamilyKey,
    lines: Mapping[int, StatLine],
    earlier: StatGeneration | None,
    now_ns: int,
    *,
    read: Callable[[int], ProcessRecord | None],
    candidate: Callable[[ProcessRecord], bool],
    top: int,
    swap_in_use: int,
    omitted: tuple[str, ...] = (),
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    self_pid: int | None = None,
    probe: ReadProbe | None = None,
) -> FamilyPhase:
    """Read full records of whole stat families (through ``read``, which keeps them) in
    descending bound order until ``top`` eligible families are certain.

    Where the best eligible family falls back to size (nobody faults or grows enough), the
    key asks for it (``read_probe_s``) and ``probe`` is given, everyone's storage reads are
    measured and the families ranked again with them as demand (:mod:`pressured.scan.reads`;
    records already read are not read again)."""
    phase = FamilyPhase()
    me = os.getpid() if self_pid is None else self_pid

    def group_in_skim(pid: int) -> int | None:
        """A process's group where it counts as present (pressured.family.GroupOf): a stat
        family holds every same-group parent that does, so its records are all read."""
        line = lines.get(pid)
        if line is None or not counts_as_present(
            pid, line[LINE_STATE], bool(line[LINE_FLAGS] & PF_KTHREAD), me
        ):
            return None
        return line[LINE_PGID]

    def walk(reads_by_pid: Mapping[int, int] | None) -> FamilyOrder | None:
        """One pass in bound order; the best eligible order found (its root in the phase)."""
        bounded = bounded_families(
            lines,
            earlier,
            now_ns,
            self_pid=me,
            families=key.families,
            min_demand=key.min_demand_bytes_per_s,
            swap_in_use=swap_in_use,
            reads=reads_by_pid,
        )
        reads_of = reads_by_pid or {}
        best: list[FamilyOrder] = []  # min-heap of the top eligible orders so far
        highest: FamilyOrder | None = None
        for position, (bound, members) in enumerate(bounded):
            victim_open = highest is None or bound >= highest
            ranking_open = len(best) < top or bound > best[0]
            if not victim_open and not ranking_open:
                break
            if position and deadline is not None and clock() > deadline:
                phase.complete = False
                break
            records = []
            for pid in members:
                record = read(pid)
                if record is not None and candidate(record):
                    records.append(as_of_skim(record, lines.get(pid)))
            phase.families_read += 1
            reads = {r.identity: reads_of[r.pid] for r in records if r.pid in reads_of}
            ranked = key.rank(
                records,
                samples_of(earlier, records),
                now_ns,
                omitted,
                reads=reads,
                present=group_in_skim,
            )
            for order, family in ranked:
                if highest is None or order > highest:
                    highest = order
                    phase.victim_root = family[0]
                heapq.heappush(best, order)
                if len(best) > top:
                    heapq.heappop(best)
        return highest

    highest = walk(None)
    falls_back = highest is not None and not highest[0]
    if falls_back and probe is not None and key.read_probe_s > 0 and phase.complete:
        phase.reads = probe(list(family_roots(lines, me, key.families)))  # None: not measured
        if phase.reads:
            walk(phase.reads)
    return phase


def read_leaf_witness(
    victim_root: ProcessRecord,
    group_members: Callable[[str], Iterable[int]],
    read: Callable[[int], ProcessRecord | None],
    already_read: Callable[[int], bool],
) -> int:
    """Read one process of the victim's leaf cgroup that is not yet read (so not its family,
    whose stat family was read whole): with it in the snapshot,
    :func:`pressured.family.leaf_cgroup_is_family` sees that the group holds more than the
    family, as a full scan would; without one, the group really is just read processes.
    Returns how many full reads it took."""
    path = victim_root.cgroup
    if path in (None, "", "/"):
        return 0
    assert path is not None  # noqa: S101 - narrowed above
    reads = 0
    for pid in group_members(path):
        if already_read(pid):
            continue
        reads += 1
        if read(pid) is not None:
            break
    return reads
