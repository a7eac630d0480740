"""``swap_usage``: once swap runs short, the largest swap user dies (systemd-oomd's swap rule,
applied to processes).

Formula: act only when the system has swap and
``SwapFree / SwapTotal * 100 < max_swap_free_percent``; then, among user processes in scope
whose ``oom_score_adj`` is above -1000 and who have at least ``min_swap_mib`` swapped out, kill
the largest ``swap_bytes``; ties go to the larger RSS + swap, then the younger process, then
the higher PID. A host without swap (or a snapshot without memory figures) gets no action:
this policy has nothing to say there, so the next one in the chain decides.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from pressured.kernel.procfs import ProcessRecord
from pressured.policies.base import BasePolicy, Decision, PolicyOptions, Victim
from pressured.policies.common import MIB, killable, mib, process_label, ranking_of
from pressured.scan.plan import Bound, RankKey
from pressured.snapshot import Snapshot


class SwapUsageOptions(PolicyOptions):
    max_swap_free_percent: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="Act when free swap is below this share of total swap (percent).",
    )
    min_swap_mib: float = Field(
        default=1.0, ge=0, description="Ignore processes with less swapped out than this (MiB)."
    )


def _key(record: ProcessRecord) -> tuple[int, int, int, int]:
    return (record.swap_bytes, record.memory_bytes, record.start_time, record.pid)


class SwapUsagePolicy(BasePolicy[SwapUsageOptions]):
    """Kill the largest swap user once free swap is below the limit."""

    name: ClassVar[str] = "swap_usage"
    Options = SwapUsageOptions

    def scan_key(self) -> RankKey:
        floor = max(1, int(self.options.min_swap_mib * MIB))
        return RankKey(
            Bound.SWAP,
            score=lambda p: p.swap_bytes,
            eligible=lambda p: killable(p) and p.swap_bytes >= floor,
            floor=floor,
        )

    async def __call__(self, snapshot: Snapshot) -> Decision:
        memory = snapshot.memory
        if memory is None or memory.swap_total_bytes <= 0:
            return Decision.no_action("no swap on this host")
        free = memory.swap_free_percent
        limit = self.options.max_swap_free_percent
        if free >= limit:
            return Decision.no_action(f"swap {free:.1f} % free, not below {limit:g} %")
        floor = max(1, int(self.options.min_swap_mib * MIB))
        ranked = sorted(
            (p for p in snapshot.candidates if killable(p) and p.swap_bytes >= floor),
            key=_key,
            reverse=True,
        )
        if not ranked:
            return Decision.no_action(f"swap {free:.1f} % free but no killable process swapped out")
        top = ranked[0]
        victim = Victim.process(
            top,
            f"largest swap user {mib(top.swap_bytes):.0f} MiB ({top.comm}) with swap "
            f"{free:.1f} % free",
            swap_bytes=top.swap_bytes,
            rss_bytes=top.rss_bytes,
            swap_free_percent=round(free, 2),
        )
        return Decision.kill(
            victim, ranking=ranking_of((process_label(p), p.swap_bytes) for p in ranked)
        )
