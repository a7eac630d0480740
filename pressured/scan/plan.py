"""What the policies rank on, so a scan can read little and still hand each its true top.

A policy that can say so returns a :class:`RankKey` from ``scan_key()``: its ranking's first
criterion as a number computed from a full :class:`~pressured.kernel.procfs.ProcessRecord`
(``score``), which processes it may rank at all (``eligible``), and how that score is bounded
by one number the scan can read cheaply for *every* process (``bound``). The scan then reads
full records in descending bound order and stops once ``top`` eligible records are in hand
whose scores beat every bound left unread: whatever those policies do with the records they
get, their victim is the one a full scan gives (ties at the top are all read, for the policy's
tie-breaks), and their ranking evidence carries the same scores (where several processes tie
with its last entry, which of them it names may differ).

A policy that ranks *families* on rates (``culprit``) returns a :class:`FamilyKey` instead:
the scan reads ``/proc/PID/stat`` of every process (lock-free, kept open between events), which
gives every family's members, faults, growth and size, bounds each family's ranking key from
it, and reads full records (for protection and eligibility) family by family in descending
bound order until ``top`` eligible families beat every bound left unread.

A policy without ``scan_key`` (or returning None) gets a full scan: the safe default for
plugins. ``NO_PROCESSES`` says a policy looks at cgroup records only.

A chain is scanned in stages (:func:`plan_stages`): the first snapshot reads what the first
policy needs, and a later policy that needs more gets a wider snapshot only when the chain
reaches it. The default chain's fallback (``oom_score``) would otherwise add a skim of every
process to every event, for a policy asked only when ``culprit`` finds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pressured.kernel.procfs import ProcessRecord, ProcessSample


class Bound(StrEnum):
    OOM_SCORE = "oom_score"
    """score <= ``/proc/PID/oom_score`` + slack."""
    MEMORY = "memory"
    """score <= resident bytes (``/proc/PID/statm``) + swap in use on the host + slack: a
    process's swapped-out pages are at most what the whole host has swapped out."""
    SWAP = "swap"
    """score <= swap in use on the host + slack, the same for every process (nothing skimmed):
    with no swap in use no process can score, and none is read."""


def _always(_record: ProcessRecord) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class RankKey:
    bound: Bound
    score: Callable[[ProcessRecord], int]
    """The policy's first sort criterion (higher ranks first) on a full record."""
    slack: int = 0
    """How far ``score`` may exceed the skimmed bound (a pattern bonus, for example)."""
    eligible: Callable[[ProcessRecord], bool] = _always
    """Whether the policy would rank this record at all (beyond the snapshot's own candidate
    rule: not protected, not a kernel thread, not a zombie, not PID 1 or us)."""
    floor: int = 0
    """A score below this is never eligible (a size floor): bounds below it end the reading."""
    order: Callable[[ProcessRecord], tuple[int, ...]] | None = None
    """The policy's whole sort key (``score`` first, then its tie-breaks: memory, start time,
    PID), for an ``OOM_SCORE`` key: where a stat skim is at hand (a chain with a family key),
    processes tied on their bound are then told apart without reading them all."""


FamilyOrder = tuple[int, float, int, int, int]
"""A family's place in the ranking, higher first: (rate rule applies 0/1, demand in bytes per
second (0 where the rule does not apply), size in bytes, root's start time, root's PID)."""


class FamilyRanking(Protocol):
    """The policy's own ranking of families, (order, members) best first, of ``candidates``
    given the earlier samples by identity, now in monotonic ns, the cgroup paths never to
    choose, storage reads in bytes per second by identity (where a read probe ran, else
    empty), and ``present``: the process group of a PID present in the scope, or None (a
    parent there that is not a candidate keeps its descendants out of a family; see
    :data:`pressured.family.GroupOf`)."""

    def __call__(
        self,
        candidates: Sequence[ProcessRecord],
        previous: Mapping[tuple[int, int], ProcessSample],
        now_ns: int,
        omitted: tuple[str, ...],
        *,
        reads: Mapping[tuple[int, int], int],
        present: Callable[[int], int | None],
    ) -> list[tuple[FamilyOrder, tuple[ProcessRecord, ...]]]: ...


@dataclass(frozen=True, slots=True)
class FamilyKey:
    """A ranking of families by demand (faults or growth per second) over size, as
    :mod:`pressured.policies.culprit` ranks: everything it needs but eligibility is in
    ``/proc/PID/stat``, so one lock-free read per process bounds every family."""

    rank: FamilyRanking
    min_demand_bytes_per_s: float
    """Below this demand a family ranks by size (the order's first element is 0)."""
    families: bool = True
    """False: every process is its own family."""
    resample_s: float = 0.1
    """With no usable earlier stat reading, read everyone's stat again after this long (the
    shortest interval an earlier reading may span, ``min_interval_s``)."""
    min_interval_s: float = 0.1
    """An earlier reading younger than this gives rates too noisy to rank on."""
    stale_after_s: float = 5.0
    """An earlier reading older than this averages too much quiet time."""
    read_probe_s: float = 0.0
    """When no family faults or grows ``min_demand_bytes_per_s`` (the size fallback is
    next), measure everyone's storage reads over this long and count them as demand
    (:mod:`pressured.scan.reads`: a ``read(2)`` thrasher makes no page faults); 0: never."""


@dataclass(frozen=True, slots=True)
class _NoProcesses:
    """Marker: the policy ranks cgroup records only."""


NO_PROCESSES = _NoProcesses()

PolicyNeed = RankKey | FamilyKey | _NoProcesses | None


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """What one snapshot must read for a chain of policies."""

    keys: tuple[RankKey, ...]
    top: int = 5
    """How many eligible records (families) each key needs in hand (the length of ranking
    evidence)."""
    family_keys: tuple[FamilyKey, ...] = ()

    @property
    def reads_processes(self) -> bool:
        return bool(self.keys or self.family_keys)

    @property
    def skim_files(self) -> tuple[str, ...]:
        """The procfs files the first phase reads for every process: ``stat`` first where a
        family key needs it (the file every event reads for everyone, so the one to keep
        open first when the fd budget cannot hold them all, :mod:`pressured.scan.kept`)."""
        files = {Bound.OOM_SCORE: "oom_score", Bound.MEMORY: "statm"}
        names = sorted({files[k.bound] for k in self.keys if k.bound in files})
        return ("stat", *names) if self.family_keys else tuple(names)


def need_of(policy: object) -> PolicyNeed:
    """A policy's :class:`RankKey`, ``NO_PROCESSES``, or None (wants a full scan)."""
    method = getattr(policy, "scan_key", None)
    if method is None or not callable(method):
        return None
    try:
        need = method()
    except Exception:  # a plugin's bug must not stop the scan: it gets a full scan instead
        return None
    return need if isinstance(need, RankKey | FamilyKey | _NoProcesses) else None


def plan_stages(policies: Sequence[object], top: int = 5) -> list[ScanPlan | None]:
    """For each policy of a chain, the plan serving it and every policy before it. Where a
    policy needs nothing the earlier ones did not (cgroup records only, or a full scan
    already planned), its stage *is* the previous stage's object: ``stages[i] is
    stages[i - 1]`` tells the chain that the snapshot in hand serves policy ``i``."""
    stages: list[ScanPlan | None] = []
    for index in range(len(policies)):
        if index and (stages[-1] is None or need_of(policies[index]) is NO_PROCESSES):
            stages.append(stages[-1])
        else:
            stages.append(plan_for(policies[: index + 1], top))
    return stages


def plan_for(policies: Iterable[object], top: int = 5) -> ScanPlan | None:
    """The plan that serves every policy of a chain, or None when one needs a full scan."""
    keys: list[RankKey] = []
    family_keys: list[FamilyKey] = []
    for policy in policies:
        need = need_of(policy)
        if need is None:
            return None
        if isinstance(need, RankKey):
            keys.append(need)
        elif isinstance(need, FamilyKey):
            family_keys.append(need)
    return ScanPlan(tuple(keys), top, tuple(family_keys))
