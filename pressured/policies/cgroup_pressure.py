"""``cgroup_pressure``: systemd-oomd's pressure rule among the scope's child cgroups. The victim
is a whole cgroup (killed with ``cgroup.kill``).

Formula, per child group ``g`` with member processes and a pressure file:

    line(g)  = the ``kind`` line of g's memory.pressure ("full" by default, as systemd-oomd;
               "some" where the kernel reports no "full" line)
    eligible = line(g).avg10 >= threshold_percent
               and g is reclaiming: reclaim_pages (pgscan) rose since the previous call,
               or line(g).total_us (cumulative stall) did

Among eligible groups the first oomd tier wins (``oomd_prefer``, plain, ``oomd_avoid``), then
the highest avg10, then avg60, then the larger usage, then the path. The reclaim condition
keeps a group that stalled in the past (its averages decay slowly) from being killed after it
has recovered. It needs the previous call's counters, so the first call that sees a group only
records them (per-policy state; ``require_reclaim = false`` drops the condition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from pressured.kernel.psi import PressureLine
from pressured.policies.base import BasePolicy, Decision, PolicyOptions, Victim
from pressured.policies.common import child_cgroups, oomd_tier, ranking_of
from pressured.snapshot import CgroupRecord, Snapshot


class CgroupPressureOptions(PolicyOptions):
    threshold_percent: float = Field(
        default=60.0,
        ge=0,
        le=100,
        description="avg10 of the chosen pressure line (percent of time stalled) to act at.",
    )
    kind: Literal["some", "full"] = Field(
        default="full", description="Which pressure line to read: 'full' (systemd-oomd) or 'some'."
    )
    require_reclaim: bool = Field(
        default=True,
        description="Only kill a group that is reclaiming now (pgscan or stall total rising).",
    )
    honour_oomd_xattrs: bool = Field(
        default=True, description="Order by the oomd_prefer / oomd_avoid extended attributes."
    )


@dataclass(frozen=True, slots=True)
class _Counters:
    reclaim_pages: int
    total_us: int


class CgroupPressurePolicy(BasePolicy[CgroupPressureOptions]):
    """Kill the child cgroup under the most memory pressure while it is reclaiming."""

    name: ClassVar[str] = "cgroup_pressure"
    Options = CgroupPressureOptions

    def __init__(self, options: CgroupPressureOptions) -> None:
        super().__init__(options)
        self.previous: dict[str, _Counters] = {}
        """Reclaim and stall counters per cgroup path as of the previous call."""

    def line(self, record: CgroupRecord) -> PressureLine | None:
        if record.pressure is None:
            return None
        if self.options.kind == "full" and record.pressure.full is not None:
            return record.pressure.full
        return record.pressure.some

    def reclaiming(self, record: CgroupRecord, line: PressureLine) -> bool:
        """Whether reclaim or stall went on since the previous call (False when first seen)."""
        if not self.options.require_reclaim:
            return True
        before = self.previous.get(record.path)
        if before is None:
            return False
        return record.reclaim_pages > before.reclaim_pages or line.total_us > before.total_us

    async def __call__(self, snapshot: Snapshot) -> Decision:
        children = [g for g in child_cgroups(snapshot) if g.pids and not g.omit]
        measured = [(g, line) for g in children if (line := self.line(g)) is not None]
        eligible = [
            (g, line)
            for g, line in measured
            if line.avg10 >= self.options.threshold_percent and self.reclaiming(g, line)
        ]
        self.previous = {g.path: _Counters(g.reclaim_pages, line.total_us) for g, line in measured}
        ranking = ranking_of(
            (g.path, line.avg10)
            for g, line in sorted(
                measured, key=lambda item: (item[1].avg10, item[1].avg60), reverse=True
            )
        )
        if not eligible:
            if not measured:
                return Decision.no_action("no child cgroup with members and a pressure file")
            return Decision(
                victims=(),
                reason=f"no child cgroup at {self.options.kind} avg10 >= "
                f"{self.options.threshold_percent:g} % while reclaiming",
                ranking=ranking,
            )
        honour = self.options.honour_oomd_xattrs
        group, line = min(
            eligible,
            key=lambda item: (
                oomd_tier(item[0], honour),
                -item[1].avg10,
                -item[1].avg60,
                -item[0].usage_bytes,
                item[0].path,
            ),
        )
        victim = Victim.group(
            group,
            f"memory pressure {self.options.kind} avg10 {line.avg10:.1f} % (avg60 "
            f"{line.avg60:.1f} %) >= {self.options.threshold_percent:g} % while reclaiming",
            avg10=line.avg10,
            avg60=line.avg60,
            stall_total_us=line.total_us,
            reclaim_pages=group.reclaim_pages,
            usage_bytes=group.usage_bytes,
        )
        return Decision.kill(victim, ranking=ranking)
