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

A policy without ``scan_key`` (or returning None) gets a full scan: the safe default for
plugins. ``NO_PROCESSES`` says a policy looks at cgroup records only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from pressured.kernel.procfs import ProcessRecord


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


@dataclass(frozen=True, slots=True)
class _NoProcesses:
    """Marker: the policy ranks cgroup records only."""


NO_PROCESSES = _NoProcesses()

PolicyNeed = RankKey | _NoProcesses | None


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """What one snapshot must read for a chain of policies."""

    keys: tuple[RankKey, ...]
    top: int = 5
    """How many eligible records each key needs in hand (the length of ranking evidence)."""

    @property
    def reads_processes(self) -> bool:
        return bool(self.keys)

    @property
    def skim_files(self) -> tuple[str, ...]:
        """The procfs files the first phase reads for every process."""
        files = {Bound.OOM_SCORE: "oom_score", Bound.MEMORY: "statm"}
        return tuple(sorted({files[k.bound] for k in self.keys if k.bound in files}))


def need_of(policy: object) -> PolicyNeed:
    """A policy's :class:`RankKey`, ``NO_PROCESSES``, or None (wants a full scan)."""
    method = getattr(policy, "scan_key", None)
    if method is None or not callable(method):
        return None
    try:
        need = method()
    except Exception:  # a plugin's bug must not stop the scan: it gets a full scan instead
        return None
    return need if isinstance(need, RankKey | _NoProcesses) else None


def plan_for(policies: Iterable[object], top: int = 5) -> ScanPlan | None:
    """The plan that serves every policy of a chain, or None when one needs a full scan."""
    keys: list[RankKey] = []
    for policy in policies:
        need = need_of(policy)
        if need is None:
            return None
        if isinstance(need, RankKey):
            keys.append(need)
    return ScanPlan(tuple(keys), top)
