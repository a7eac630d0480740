"""``culprit``: the family taking memory *now* dies, not the one that is merely large.

Candidates are grouped into **families**: a process with its descendants in the same process
group (:mod:`pressured.family`), so a parent with eight forked workers is judged, and killed,
as one. For each family, over the interval since the previous sample of its processes
(:attr:`Snapshot.previous`: the scope's kept ``/proc/PID/stat`` reading from arm time or the
previous event, 0.1 to 5 s old, or else a second reading 100 ms after the first; see
:mod:`pressured.scan.families`)::

    faults  = (minor + major faults of its members) * page size / interval   # pages it touched
    growth  = (sum of members' RSS now - then) / interval                     # memory it took
    reads   = members' storage reads (/proc/PID/io read_bytes) per second     # see below
    demand  = max(faults, growth, reads)                                      # bytes per second

The family with the highest ``demand`` dies, provided it reaches ``min_demand_mib_per_s``
(1 MiB/s: a quiet process faults nothing, a page-cache thrasher tens of MiB/s, a grower at
least its growth). When no family demands that much (no history, or a slow leak), the
**largest** family (RSS + swap) dies. Ties: the larger family, then the younger root, then the
higher PID.

``reads`` is measured only when it can change the answer: when no family faults or grows
``min_demand_mib_per_s`` and the scope has been refaulting (:mod:`pressured.readprobe`), the
scan reads everyone's ``read_bytes`` twice, 100 ms apart (:mod:`pressured.scan.reads`). A process
thrashing the page cache through ``read(2)`` makes almost no page faults; without this the
size fallback killed an idle bystander beside it. Elsewhere ``reads`` is 0.

``oom_score_adj`` plays no part beyond -1000 (never), and neither do names: a
process can raise its adj and choose its name; what it faults and grows it cannot hide.

Everything the ranking needs but eligibility is in ``/proc/PID/stat``, which takes no mmap
lock: :meth:`CulpritPolicy.scan_key` lets the scan read that one file for every process and
full records only for the top families (:mod:`pressured.scan.families`), with the same victim
as a full scan.

Members whose cgroup is marked ``oomd_omit`` (systemd's ``ManagedOOMPreference=omit``) are
never ranked. The ranking carries each family's figures (demand, faults, growth, majflt rate,
size, members, and its child group's pressure where known), so the kill record shows why the
winner beat the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from pressured.family import GroupOf, family_roots, present_groups
from pressured.history import MIN_INTERVAL_S, RESAMPLE_S, STALE_AFTER_S, measure
from pressured.kernel.procfs import ProcessRecord
from pressured.policies.base import BasePolicy, Decision, PolicyOptions, Victim
from pressured.policies.common import MIB, killable, mib, omitted_groups, ranking_of
from pressured.policies.patterns import ProcessPattern, any_match
from pressured.protection import within
from pressured.scan.plan import FamilyKey, FamilyOrder, PolicyNeed
from pressured.snapshot import ProcessSample, Snapshot


class CulpritOptions(PolicyOptions):
    min_demand_mib_per_s: float = Field(
        default=1.0,
        ge=0,
        description="A family must fault or grow at least this fast (MiB/s) to be chosen as "
        "the culprit; below it, the largest family dies.",
    )
    families: bool = Field(
        default=True,
        description="Rank a process together with its descendants in its process group "
        "(set false, with kill.family = false, to judge and kill single processes).",
    )
    ignore: tuple[ProcessPattern, ...] = Field(
        default=(), description="Patterns whose matches are never chosen by this policy."
    )


@dataclass(frozen=True, slots=True)
class FamilyFigures:
    root: ProcessRecord
    members: tuple[ProcessRecord, ...]
    size_bytes: int
    fault_bytes_per_s: float
    growth_bytes_per_s: float
    majflt_per_s: float
    interval_s: float | None
    """None when no member had an earlier sample: fault and growth rates unknown."""
    group_some_avg10: float | None = None
    read_bytes_per_s: int = 0
    """What its members made the kernel fetch from storage, where a read probe ran."""

    @property
    def demand_bytes_per_s(self) -> float:
        return max(self.fault_bytes_per_s, self.growth_bytes_per_s, self.read_bytes_per_s)

    @property
    def rated(self) -> bool:
        """Whether any rate is known: an earlier sample, or reads seen by a probe."""
        return self.interval_s is not None or self.read_bytes_per_s > 0

    def label(self) -> str:
        extra = f" +{len(self.members) - 1}" if len(self.members) > 1 else ""
        return f"{self.root.pid} {self.root.comm}{extra}"

    def evidence(self) -> str:
        size = f"size {mib(self.size_bytes):.1f} MiB"
        reads = (
            f", storage reads {mib(self.read_bytes_per_s):.1f} MiB/s"
            if self.read_bytes_per_s
            else ""
        )
        if self.interval_s is None:
            rates = f"no earlier sample{reads}"
        else:
            rates = (
                f"demand {mib(self.demand_bytes_per_s):.1f} MiB/s (faults "
                f"{mib(self.fault_bytes_per_s):.1f} MiB/s, growth "
                f"{mib(self.growth_bytes_per_s):+.1f} MiB/s, majflt {self.majflt_per_s:.0f}/s "
                f"over {self.interval_s:.2f} s{reads})"
            )
        group = (
            f", group some avg10 {self.group_some_avg10:.1f}"
            if self.group_some_avg10 is not None
            else ""
        )
        return f"{rates}, {size}, {len(self.members)} process(es){group}"


class CulpritPolicy(BasePolicy[CulpritOptions]):
    """Kill the family faulting or growing fastest; failing that, the largest family."""

    name: ClassVar[str] = "culprit"
    Options = CulpritOptions
    wants_history: ClassVar[bool] = True

    def scan_key(self) -> PolicyNeed:
        # Demand and size come from /proc/PID/stat alone: the scan bounds every family from
        # one lock-free read per process and reads full records of the top families only.
        return FamilyKey(
            rank=self._rank_for_scan,
            min_demand_bytes_per_s=self.options.min_demand_mib_per_s * MIB,
            families=self.options.families,
            resample_s=RESAMPLE_S,
            min_interval_s=MIN_INTERVAL_S,
            stale_after_s=STALE_AFTER_S,
            read_probe_s=RESAMPLE_S,
        )

    def _rank_for_scan(
        self,
        candidates: Sequence[ProcessRecord],
        previous: Mapping[tuple[int, int], ProcessSample],
        now_ns: int,
        omitted: tuple[str, ...],
        *,
        reads: Mapping[tuple[int, int], int],
        present: GroupOf,
    ) -> list[tuple[FamilyOrder, tuple[ProcessRecord, ...]]]:
        figures = self.rank_records(
            candidates, previous, now_ns, omitted, pressure={}, reads=reads, present=present
        )
        return [(self.order(f), f.members) for f in figures]

    def order(self, f: FamilyFigures) -> FamilyOrder:
        """Where a family ranks (higher first): the rate rule, demand, size, then the younger
        root, then the higher PID."""
        floor = self.options.min_demand_mib_per_s * MIB
        culprit = int(f.rated and f.demand_bytes_per_s >= floor)
        demand = f.demand_bytes_per_s if culprit else 0.0
        return (culprit, demand, f.size_bytes, f.root.start_time, f.root.pid)

    def rank(self, snapshot: Snapshot) -> list[FamilyFigures]:
        """Every family with its figures, best victim first."""
        pressure = {
            g.path: g.pressure.some.avg10 for g in snapshot.cgroups[1:] if g.pressure is not None
        }
        return self.rank_records(
            snapshot.candidates,
            snapshot.previous,
            snapshot.taken_monotonic_ns,
            omitted_groups(snapshot),
            pressure=pressure,
            reads=snapshot.read_rates or {},
            present=present_groups(snapshot.processes, snapshot.self_pid),
        )

    def rank_records(
        self,
        candidates: Sequence[ProcessRecord],
        previous: Mapping[tuple[int, int], ProcessSample],
        now_ns: int,
        omitted: tuple[str, ...],
        *,
        pressure: Mapping[str, float],
        reads: Mapping[tuple[int, int], int],
        present: GroupOf,
    ) -> list[FamilyFigures]:
        """The families of ``candidates`` with their figures, best victim first (the one
        ranking of the policy and of its fast scan). ``reads``: storage reads in bytes per
        second by identity, where a read probe ran."""
        eligible = [
            p
            for p in candidates
            if killable(p)
            and not any_match(self.options.ignore, p)
            and within(p.cgroup, omitted) is None
        ]
        if self.options.families:
            families = [(root, (root, *rest)) for root, rest in family_roots(eligible, present)]
        else:
            families = [(p, (p,)) for p in eligible]
        figures = []
        for root, members in families:
            faults, growth, majflt, interval = measure(members, previous, now_ns)
            group = next(
                (avg for path, avg in pressure.items() if within(root.cgroup, (path,))), None
            )
            figures.append(
                FamilyFigures(
                    root=root,
                    members=members,
                    size_bytes=sum(m.memory_bytes for m in members),
                    fault_bytes_per_s=faults,
                    growth_bytes_per_s=growth,
                    majflt_per_s=majflt,
                    interval_s=interval,
                    group_some_avg10=group,
                    read_bytes_per_s=sum(reads.get(m.identity, 0) for m in members),
                )
            )
        return sorted(figures, key=self.order, reverse=True)

    async def __call__(self, snapshot: Snapshot) -> Decision:
        ranked = self.rank(snapshot)
        if not ranked:
            return Decision.no_action("no killable process in scope")
        top = ranked[0]
        floor = self.options.min_demand_mib_per_s * MIB
        if top.rated and top.demand_bytes_per_s >= floor:
            rule = "demand"
            reading = top.read_bytes_per_s > max(top.fault_bytes_per_s, top.growth_bytes_per_s)
            doing = "reading from storage" if reading else "faulting/growing"
            why = (
                f"culprit: {doing} {mib(top.demand_bytes_per_s):.1f} MiB/s, the most "
                f"in scope ({top.root.comm}, {len(top.members)} process(es), "
                f"{mib(top.size_bytes):.0f} MiB)"
            )
        else:
            rule = "size"
            why = (
                f"largest family {mib(top.size_bytes):.0f} MiB ({top.root.comm}, "
                f"{len(top.members)} process(es)); nobody faults or grows"
                f"{' or reads from storage' if snapshot.read_rates is not None else ''} "
                f">= {self.options.min_demand_mib_per_s:g} MiB/s"
            )
        victim = Victim.process(
            top.root,
            why,
            rule=rule,
            demand_bytes_per_s=round(top.demand_bytes_per_s),
            fault_bytes_per_s=round(top.fault_bytes_per_s),
            growth_bytes_per_s=round(top.growth_bytes_per_s),
            majflt_per_s=round(top.majflt_per_s, 1),
            read_bytes_per_s=top.read_bytes_per_s,
            interval_s=round(top.interval_s, 3) if top.interval_s is not None else -1.0,
            size_bytes=top.size_bytes,
            members=len(top.members),
        )
        return Decision.kill(victim, ranking=ranking_of((f.label(), f.evidence()) for f in ranked))
