"""``cgroup_size_growth``: oomd's ``kill_by_memory_size_or_growth`` among the scope's child
cgroups. The victim is a whole cgroup (killed with ``cgroup.kill``).

Formula, per child group ``g`` with member processes:

    effective(g) = max(0, usage(g) - max(memory.min(g), memory.low(g)))   # protection first
    share(g)     = effective(g) / sum(effective of all children)
    average(g)   = EWMA of effective(g) over earlier calls (weight ``ewma_alpha`` on the newest)
    growth(g)    = effective(g) / max(average(g), 1 MiB)                   # 1.0 when first seen

A group qualifies by **size** when ``share >= size_threshold_percent / 100``, or by **growth**
when ``growth >= min_growth_ratio`` and ``effective >= min_usage_mib``. The choice is made in
oomd's preference tiers (``oomd_prefer`` groups, then plain ones, then ``oomd_avoid`` ones):
in the first tier with a qualifying group, the largest size-qualified group dies; failing that,
the fastest-growing one (ties: larger effective usage, then path). The averages are per-policy
state kept across calls (one instance lives as long as its chain); groups that disappear are
forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from pressured.policies.base import BasePolicy, Decision, PolicyOptions, Victim
from pressured.policies.common import MIB, child_cgroups, mib, oomd_tier, ranking_of
from pressured.snapshot import CgroupRecord, Snapshot


class CgroupSizeGrowthOptions(PolicyOptions):
    size_threshold_percent: float = Field(
        default=50.0,
        gt=0,
        le=100,
        description="A group using at least this share of its siblings' total is killed.",
    )
    min_growth_ratio: float = Field(
        default=1.5,
        gt=1.0,
        description="... or one whose usage is this many times its moving average.",
    )
    min_usage_mib: float = Field(
        default=16.0, ge=0, description="The growth rule ignores groups smaller than this (MiB)."
    )
    ewma_alpha: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="Weight of the newest usage in the moving average (1 = no memory).",
    )
    honour_oomd_xattrs: bool = Field(
        default=True, description="Order by the oomd_prefer / oomd_avoid extended attributes."
    )


@dataclass(frozen=True, slots=True)
class _Sized:
    record: CgroupRecord
    effective: int
    share: float
    growth: float
    tier: int


def effective_usage(record: CgroupRecord) -> int:
    """Usage above the group's ``memory.min``/``memory.low`` protection (oomd's rule)."""
    if record.memory is None:
        return 0
    protection = max(record.memory.min_bytes, record.memory.low_bytes, 0)
    return max(0, record.memory.current_bytes - protection)


class CgroupSizeGrowthPolicy(BasePolicy[CgroupSizeGrowthOptions]):
    """Kill the child cgroup that is too big for its siblings or growing too fast."""

    name: ClassVar[str] = "cgroup_size_growth"
    Options = CgroupSizeGrowthOptions

    def __init__(self, options: CgroupSizeGrowthOptions) -> None:
        super().__init__(options)
        self.averages: dict[str, float] = {}
        """Moving average of effective usage per cgroup path, across calls."""

    def _measure(self, children: tuple[CgroupRecord, ...]) -> list[_Sized]:
        effective = {g.path: effective_usage(g) for g in children}
        total = sum(effective.values())
        sized = []
        for group in children:
            now = effective[group.path]
            previous = self.averages.get(group.path)
            growth = 1.0 if previous is None else now / max(previous, MIB)
            share = now / total if total else 0.0
            tier = oomd_tier(group, self.options.honour_oomd_xattrs)
            sized.append(_Sized(group, now, share, growth, tier))
        return sized

    def _remember(self, children: tuple[CgroupRecord, ...]) -> None:
        alpha = self.options.ewma_alpha
        seen: dict[str, float] = {}
        for group in children:
            now = float(effective_usage(group))
            previous = self.averages.get(group.path)
            seen[group.path] = now if previous is None else alpha * now + (1 - alpha) * previous
        self.averages = seen

    async def __call__(self, snapshot: Snapshot) -> Decision:
        children = tuple(g for g in child_cgroups(snapshot) if g.pids and not g.omit)
        if not children:
            return Decision.no_action("no child cgroup with member processes in scope")
        sized = self._measure(children)
        self._remember(children)
        size_cut = self.options.size_threshold_percent / 100
        usage_cut = self.options.min_usage_mib * MIB
        ranking = ranking_of(
            (s.record.path, f"{s.share:.0%} of siblings, x{s.growth:.2f} average")
            for s in sorted(sized, key=lambda s: (s.effective, s.record.path), reverse=True)
        )
        for tier in sorted({s.tier for s in sized}):
            in_tier = [s for s in sized if s.tier == tier]
            by_size = [s for s in in_tier if s.share >= size_cut]
            if by_size:
                top = max(by_size, key=lambda s: (s.effective, s.record.path))
                why = (
                    f"uses {top.share:.0%} of its siblings' memory ({mib(top.effective):.0f} MiB "
                    f"above protection; rule: >= {self.options.size_threshold_percent:g} %)"
                )
                return self._kill(top, why, "size", ranking)
            by_growth = [
                s
                for s in in_tier
                if s.growth >= self.options.min_growth_ratio and s.effective >= usage_cut
            ]
            if by_growth:
                top = max(by_growth, key=lambda s: (s.growth, s.effective, s.record.path))
                why = (
                    f"grew to x{top.growth:.2f} its moving average ({mib(top.effective):.0f} MiB; "
                    f"rule: >= x{self.options.min_growth_ratio:g})"
                )
                return self._kill(top, why, "growth", ranking)
        return Decision(
            victims=(),
            reason="no child cgroup is over the size share or growing fast",
            ranking=ranking,
        )

    @staticmethod
    def _kill(
        top: _Sized, why: str, rule: str, ranking: tuple[tuple[str, float | int | str], ...]
    ) -> Decision:
        victim = Victim.group(
            top.record,
            why,
            rule=rule,
            effective_bytes=top.effective,
            share=round(top.share, 4),
            growth=round(top.growth, 3),
            usage_bytes=top.record.usage_bytes,
        )
        return Decision.kill(victim, ranking=ranking)
