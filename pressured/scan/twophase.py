"""Two phases: skim every process for one cheap number, then read full records only for the
finalists, in descending order of that number's bound.

Phase 1 reads one lock-free file per process (``statm`` or ``oom_score``, see
:mod:`pressured.scan.skim`). Phase 2 reads the full record (stat, status, oom_score,
oom_score_adj, cgroup; the command line through a :class:`~pressured.scan.cmdline.
CmdlineReader`) for processes in descending bound order, and stops for a key once ``top``
eligible records score above every bound still unread (see :mod:`pressured.scan.plan`).

Reading in bound order is also what makes a short scan useful: when the deadline cuts it,
what was read is the top of the ranking, not the first PIDs of a directory listing.

A plan with a :class:`~pressured.scan.plan.FamilyKey` skims ``stat`` and runs the family phase
(:mod:`pressured.scan.families`) first; every record then carries that skim's figures, and the
result carries the earlier samples its rates were taken against.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace

from pressured.errors import ParseError
from pressured.kernel import procfs
from pressured.kernel.procfs import ProcessRecord, ScanProblem, ScanResult, SkimResult
from pressured.scan.cmdline import CmdlineReader
from pressured.scan.families import (
    as_of_skim,
    read_families,
    read_leaf_witness,
    samples_of,
)
from pressured.scan.kept import StatGeneration
from pressured.scan.plan import Bound, FamilyKey, RankKey, ScanPlan
from pressured.scan.reads import ReadProbe, by_identity
from pressured.scan.skim import SkimFn
from pressured.scan.skim import skim as default_skim

EarlierFn = Callable[[int, int, int], "StatGeneration | None"]
"""(now ns, min age ns, max age ns) -> the newest kept stat reading of that age, or None."""

_SKIM_FILE = {Bound.OOM_SCORE: "oom_score", Bound.MEMORY: "statm"}
_INFINITY = float("inf")


class _Reader:
    """Full records by PID, each read at most once per scan, problems collected."""

    def __init__(
        self,
        proc_root: str,
        cgroups: Mapping[int, str] | None,
        cmdline_limit: int,
        cmdlines: CmdlineReader | None,
        deadline: float | None,
    ) -> None:
        self.proc_root = proc_root
        self.cgroups = cgroups
        self.cmdline_limit = cmdline_limit
        self.cmdlines = cmdlines
        self.deadline = deadline
        self.records: dict[int, ProcessRecord | None] = {}
        self.problems: list[ScanProblem] = []
        self.vanished = 0

    def get(self, pid: int) -> ProcessRecord | None:
        if pid in self.records:
            return self.records[pid]
        record: ProcessRecord | None = None
        try:
            known = self.cgroups.get(pid) if self.cgroups is not None else None
            record = procfs.read_process(
                pid,
                self.proc_root,
                self.cmdline_limit,
                cgroup=known,
                with_cmdline=self.cmdlines is None,
            )
        except (OSError, ParseError) as exc:
            problem = procfs.read_failure(pid, exc)
            if problem is None:
                self.vanished += 1
            else:
                self.problems.append(problem)
        if record is not None and self.cmdlines is not None and not record.is_kernel_thread:
            identity = record.identity
            found = self.cmdlines.read_many([identity], self.deadline).get(identity)
            if found is not None:
                record = replace(record, cmdline=found[0], cmdline_truncated=found[1])
                record = replace(record, cmdline_known=True)
            else:
                self.problems.append(ScanProblem(pid, "cmdline not read in time"))
        if record is not None and record.is_kernel_thread:
            record = replace(record, cmdline_known=True)
        self.records[pid] = record
        return record


Order = tuple[float, ...]
"""A bound or a score as a tuple: the policy's first criterion, then (where the key gives its
whole sort key) the tie-breaks."""


def _descending(
    key: RankKey,
    skims: Mapping[str, SkimResult],
    pids: Sequence[int],
    swap_in_use: int,
    lines: Mapping[int, procfs.StatLine],
    *,
    read_lines: Callable[[list[int]], None] | None = None,
) -> Iterator[tuple[Order, int]]:
    """(bound, pid) from the highest bound down. Equal first bounds come in no particular
    order, unless the key gives its whole sort key (``RankKey.order``): then ties are ordered
    by a bound on the tie-breaks too (resident + swap in use, start time, PID) from a stat
    line, so a thousand processes of one oom_score are not all read in full. The lines come
    from the scan's stat skim, or (without one) from ``read_lines`` for each group of ties,
    which adds what it reads to ``lines``, so the scores match the bounds."""
    if key.bound is Bound.SWAP:
        bound = float(swap_in_use + key.slack)
        yield from (((bound,), pid) for pid in pids)
        return
    skimmed = skims[_SKIM_FILE[key.bound]]
    # A process whose cheap file was malformed cannot be bounded: read it early rather
    # than leave a possible winner out.
    yield from (((_INFINITY,), p.pid) for p in skimmed.problems if p.pid)
    extra = float(key.slack + (swap_in_use if key.bound is Bound.MEMORY else 0))
    values = skimmed.values
    # The same constant is added to every value, so the values' order is the bounds'; a
    # sort keyed by a C method is the cheapest way to it (about 1 ms for 10,000 here).
    ranked = sorted(values, key=values.__getitem__, reverse=True)
    if not _orders_ties(key, lines, read_lines):
        yield from (((values[pid] + extra,), pid) for pid in ranked)
        return
    for value, group in itertools.groupby(ranked, key=values.__getitem__):
        tied = list(group)
        if len(tied) > 1 and read_lines is not None:
            read_lines([pid for pid in tied if pid not in lines])
        bounds = [((value + extra, *_tie_bound(pid, lines, swap_in_use)), pid) for pid in tied]
        bounds.sort(reverse=True)
        yield from bounds


def _orders_ties(
    key: RankKey,
    lines: Mapping[int, procfs.StatLine],
    read_lines: Callable[[list[int]], None] | None,
) -> bool:
    """Whether ``key``'s ties are ordered by stat lines (and its scores are whole orders)."""
    return (
        key.order is not None
        and key.bound is Bound.OOM_SCORE
        and (bool(lines) or read_lines is not None)
    )


def _tie_bound(
    pid: int, lines: Mapping[int, procfs.StatLine], swap_in_use: int
) -> tuple[float, float, float]:
    """What (memory, start time, PID) of a process cannot exceed, from its stat line (the
    record's resident size is the line's: :func:`~pressured.scan.families.as_of_skim`)."""
    line = lines.get(pid)
    if line is None:
        return (_INFINITY, _INFINITY, _INFINITY)
    memory = line[procfs.LINE_RSS_PAGES] * procfs.PAGE_SIZE + swap_in_use
    return (memory, line[procfs.LINE_START], pid)


def scan_two_phase(
    proc_root: str,
    pids: Sequence[int],
    plan: ScanPlan | None,
    *,
    candidate: Callable[[ProcessRecord], bool],
    swap_in_use: int,
    cgroups: Mapping[int, str] | None = None,
    cmdline_limit: int = procfs.DEFAULT_CMDLINE_LIMIT,
    deadline: float | None = None,
    cmdlines: CmdlineReader | None = None,
    skim: SkimFn = default_skim,
    clock: Callable[[], float] = time.monotonic,
    earlier: EarlierFn | None = None,
    omitted: tuple[str, ...] = (),
    group_members: Callable[[str], Iterable[int]] | None = None,
    read_probe: ReadProbe | None = None,
) -> ScanResult:
    """Read what ``plan`` needs of ``pids`` (every full record, largest first, when ``plan``
    is None). ``candidate`` is the snapshot's own rule (not protected, not a kernel thread, a
    zombie, PID 1 or us). Never raises for a process or a file.

    For a family key: ``earlier`` finds a kept stat reading to take rates against,
    ``omitted`` are the cgroups no policy chooses from, ``group_members`` lists the PIDs
    of a cgroup (its subtree), to read one outsider of the victim's leaf group, and
    ``read_probe`` measures storage reads where the family ranking would fall back to size
    (None: never, for this scan)."""
    started = time.perf_counter_ns()
    reader = _Reader(proc_root, cgroups, cmdline_limit, cmdlines, deadline)
    problems: list[ScanProblem] = []
    complete = True
    lines: Mapping[int, procfs.StatLine] = {}
    sampled_ns: int | None = None
    then: StatGeneration | None = None
    reads: dict[int, int] | None = None
    if plan is not None and plan.family_keys:
        stat, then = _stat_with_earlier(
            plan.family_keys[0],
            proc_root,
            pids,
            deadline=deadline,
            clock=clock,
            skim=skim,
            earlier=earlier,
        )
        problems.extend(stat.problems)
        reader.vanished += stat.vanished
        lines, sampled_ns = stat.lines, stat.taken_ns
        # Even a skim the deadline cut short is ranked: its families are the likely answer.
        families_read, reads = _family_phases(
            plan,
            reader,
            stat,
            then,
            candidate=candidate,
            swap_in_use=swap_in_use,
            omitted=omitted,
            clock=clock,
            group_members=group_members,
            probe=read_probe,
        )
        complete = stat.complete and families_read
    keys: tuple[RankKey, ...]
    if plan is None:
        # Everything, but largest first, so a deadline leaves the records that matter.
        keys = (RankKey(Bound.MEMORY, score=lambda record: record.memory_bytes),)
        top: float = _INFINITY
    else:
        keys, top = plan.keys, plan.top
    skims: dict[str, SkimResult] = {}
    for name in sorted({_SKIM_FILE[k.bound] for k in keys if k.bound in _SKIM_FILE}):
        result = skim(proc_root, pids, name, deadline, clock)
        skims[name] = result
        problems.extend(result.problems)
        reader.vanished += result.vanished
        complete = complete and result.complete
    skimmed = max((len(result.values) for result in skims.values()), default=0)
    read_lines = None
    if not lines:
        lines, read_lines = _tie_lines(proc_root, deadline, clock)
    for key in keys:
        order = _descending(key, skims, pids, swap_in_use, lines, read_lines=read_lines)
        read_all = _read_key(
            key,
            order,
            reader,
            candidate=candidate,
            top=top,
            clock=clock,
            lines=lines,
            whole=_orders_ties(key, lines, read_lines),
        )
        complete = read_all and complete
    if plan is None and complete:
        # A full scan reads every process. One whose cheap file could not be read (gone, or a
        # /proc without that file) still gets its full read: that read says what is wrong.
        tail = [pid for pid in pids if pid not in reader.records]
        counted = reader.vanished  # the skim counted each of these as vanished already
        for pid in tail:
            if deadline is not None and clock() > deadline:
                complete = False
                break
            reader.get(pid)
        read_after_all = len(tail) - (reader.vanished - counted)
        reader.vanished = max(0, counted - read_after_all)
    problems.extend(reader.problems)
    processes = tuple(r for r in reader.records.values() if r is not None)
    if lines:
        processes = tuple(as_of_skim(record, lines.get(record.pid)) for record in processes)
        skimmed = max(skimmed, len(lines))
    return ScanResult(
        processes=processes,
        problems=tuple(_one_per_process(problems)),
        vanished=reader.vanished,
        complete=complete,
        duration_ns=time.perf_counter_ns() - started,
        skimmed=skimmed,
        previous=samples_of(then, processes),
        sampled_ns=sampled_ns,
        read_rates=None if reads is None else by_identity(reads, (p.identity for p in processes)),
    )


def _tie_lines(
    proc_root: str, deadline: float | None, clock: Callable[[], float]
) -> tuple[dict[int, procfs.StatLine], Callable[[list[int]], None]]:
    """Without a stat skim: an empty table of stat lines, and the reader that adds those of a
    group of ties at the top to it (fresh opens: a kept stat file holds every process of a
    family key's skim, not a few ties)."""
    lines: dict[int, procfs.StatLine] = {}

    def read_lines(tied: list[int]) -> None:
        lines.update(default_skim(proc_root, tied, "stat", deadline, clock).lines)

    return lines, read_lines


def _read_key(
    key: RankKey,
    order: Iterator[tuple[Order, int]],
    reader: _Reader,
    *,
    candidate: Callable[[ProcessRecord], bool],
    top: float,
    clock: Callable[[], float],
    lines: Mapping[int, procfs.StatLine],
    whole: bool,
) -> bool:
    """Full records in ``order`` until the key's top is certain; False when the deadline
    cut it short. ``whole``: scores are the key's whole order, as the bounds are."""
    best: list[Order] = []  # min-heap of the top eligible scores so far
    highest: Order = (-_INFINITY,)
    deadline = reader.deadline
    for position, (bound, pid) in enumerate(order):
        if bound[0] < key.floor:
            break  # nothing unread can even be eligible
        # Read on while something unread may still be the victim (ties at the top
        # included: the policy's tie-breaks need their records) or may outscore the
        # ranking's last entry. Ties with that last entry are not read: the evidence's
        # scores are exact, which of several equal processes it names may differ.
        victim_open = not best or bound >= highest
        ranking_open = len(best) < top or bound > best[0]
        if not victim_open and not ranking_open:
            break
        # Past the deadline, stop, but only after the first record: a late scan still
        # hands the policy its most likely answer.
        if position and deadline is not None and clock() > deadline:
            return False
        record = reader.get(pid)
        if record is None or not candidate(record) or not key.eligible(record):
            continue
        if whole and key.order is not None:
            score: Order = key.order(as_of_skim(record, lines.get(pid)))
        else:
            score = (key.score(record),)
        highest = max(highest, score)
        heapq.heappush(best, score)
        if len(best) > top:
            heapq.heappop(best)
    return True


def _family_phases(
    plan: ScanPlan,
    reader: _Reader,
    stat: SkimResult,
    then: StatGeneration | None,
    *,
    candidate: Callable[[ProcessRecord], bool],
    swap_in_use: int,
    omitted: tuple[str, ...],
    clock: Callable[[], float],
    group_members: Callable[[str], Iterable[int]] | None,
    probe: ReadProbe | None,
) -> tuple[bool, dict[int, int] | None]:
    """Each family key's phase, then one outsider of its victim's leaf cgroup: whether they
    all finished before the deadline, and the storage reads by PID where a probe ran."""
    complete = True
    reads: dict[int, int] | None = None
    for family_key in plan.family_keys:
        phase = read_families(
            family_key,
            stat.lines,
            then,
            stat.taken_ns,
            read=reader.get,
            candidate=candidate,
            top=plan.top,
            swap_in_use=swap_in_use,
            omitted=omitted,
            deadline=reader.deadline,
            clock=clock,
            probe=probe if reads is None else None,
        )
        if phase.reads is not None:
            reads = phase.reads
        complete = complete and phase.complete
        if phase.victim_root is not None and group_members is not None:
            read_leaf_witness(
                phase.victim_root, group_members, reader.get, reader.records.__contains__
            )
    return complete, reads


def _stat_with_earlier(
    key: FamilyKey,
    proc_root: str,
    pids: Sequence[int],
    *,
    deadline: float | None,
    clock: Callable[[], float],
    skim: SkimFn,
    earlier: EarlierFn | None,
) -> tuple[SkimResult, StatGeneration | None]:
    """Everyone's stat now, and the earlier reading to take rates against: a kept one of
    the right age, or (failing that) this one, with the stat read again ``resample_s`` later
    as "now" (the first event of an episode pays that wait only when nothing recent is kept)."""
    stat = skim(proc_root, pids, "stat", deadline, clock)
    min_age = int(key.min_interval_s * 1e9)
    max_age = int(key.stale_after_s * 1e9)
    then = earlier(stat.taken_ns, min_age, max_age) if earlier is not None else None
    if then is not None or key.resample_s <= 0 or not stat.lines:
        return stat, then
    time.sleep(key.resample_s)
    again = skim(proc_root, pids, "stat", deadline, clock)
    return again, StatGeneration(stat.taken_ns, stat.lines)


def _one_per_process(problems: Iterable[ScanProblem]) -> Iterator[ScanProblem]:
    """The first problem of each process (its stat skim and its full read may both trip on
    the same broken file: one log line each, as the scan's contract says); problems of no
    process (cgroup errors) all stay."""
    seen: set[int] = set()
    for problem in problems:
        if problem.pid:
            if problem.pid in seen:
                continue
            seen.add(problem.pid)
        yield problem
