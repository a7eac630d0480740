"""``adj_tiers``: Android lmkd's order. Processes are grouped by ``oom_score_adj``; the highest
tier (most expendable) is emptied first, the heaviest process within it first.

Formula: ``key = (oom_score_adj, rss_bytes + swap_bytes)``, highest first; ties go to the
younger process (later start time), then the higher PID. Only processes whose adj is at least
the *floor* of the event's level are ranked:

    floor = min_adj_per_level.get(event.level, default_min_adj)

so with ``min_adj_per_level = {some = 900, full = 0}`` a "some" event only kills cached or
background work (adj >= 900), and only a "full" event reaches further (adj >= 0), as lmkd's
per-level minimum adj does. ``oom_score_adj = -1000`` is never chosen whatever the floor.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from pressured.kernel.procfs import ProcessRecord
from pressured.policies.base import BasePolicy, Decision, PolicyOptions, Victim
from pressured.policies.common import MIB, killable, mib, process_label, ranking_of
from pressured.snapshot import Snapshot

ADJ_MAX = 1000


class AdjTiersOptions(PolicyOptions):
    min_adj_per_level: dict[str, int] = Field(
        default_factory=dict,
        description="Per event level, the lowest oom_score_adj that may be killed, e.g. "
        "{some = 900, full = 0}.",
    )
    default_min_adj: int = Field(
        default=-999,
        ge=-999,
        le=ADJ_MAX,
        description="Floor for levels not listed in min_adj_per_level.",
    )
    min_mib: float = Field(
        default=0.0, ge=0, description="Ignore processes smaller than this (RSS + swap, MiB)."
    )

    @field_validator("min_adj_per_level")
    @classmethod
    def _adj_range(cls, value: dict[str, int]) -> dict[str, int]:
        for level, adj in value.items():
            if not -999 <= adj <= ADJ_MAX:
                raise ValueError(f"level {level!r}: min adj {adj} is not within -999..1000")
        return value


def _key(record: ProcessRecord) -> tuple[int, int, int, int]:
    return (record.oom_score_adj, record.memory_bytes, record.start_time, record.pid)


class AdjTiersPolicy(BasePolicy[AdjTiersOptions]):
    """Kill from the highest oom_score_adj tier allowed at this level, heaviest first."""

    name: ClassVar[str] = "adj_tiers"
    Options = AdjTiersOptions

    def floor(self, level: str) -> int:
        """The lowest adj that may die on an event of ``level``."""
        return self.options.min_adj_per_level.get(level, self.options.default_min_adj)

    async def __call__(self, snapshot: Snapshot) -> Decision:
        floor = self.floor(snapshot.event.level)
        size_floor = int(self.options.min_mib * MIB)
        ranked = sorted(
            (
                p
                for p in snapshot.candidates
                if killable(p) and p.oom_score_adj >= floor and p.memory_bytes >= size_floor
            ),
            key=_key,
            reverse=True,
        )
        if not ranked:
            return Decision.no_action(
                f"no process with oom_score_adj >= {floor} for level {snapshot.event.level!r}"
            )
        top = ranked[0]
        victim = Victim.process(
            top,
            f"oom_score_adj tier {top.oom_score_adj} (floor {floor} at level "
            f"{snapshot.event.level!r}), heaviest at {mib(top.memory_bytes):.0f} MiB ({top.comm})",
            oom_score_adj=top.oom_score_adj,
            adj_floor=floor,
            rss_bytes=top.rss_bytes,
            swap_bytes=top.swap_bytes,
        )
        return Decision.kill(
            victim,
            ranking=ranking_of(
                (process_label(p), f"adj {p.oom_score_adj} {mib(p.memory_bytes):.0f} MiB")
                for p in ranked
            ),
        )
