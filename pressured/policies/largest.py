"""``largest``: the process holding the most memory dies (nohang/earlyoom ``--sort-by-rss``
without the kernel's opinion).

Formula: ``size = rss_bytes + swap_bytes`` (what killing it gives back at most), over every
user process in scope whose ``oom_score_adj`` is above -1000, at least ``min_mib`` large and
matched by no ``ignore`` pattern. The largest size dies; ties go to the higher
``oom_score_adj``, then the younger process (later start time), then the higher PID.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from pressured.kernel.procfs import ProcessRecord
from pressured.policies.base import BasePolicy, Decision, PolicyOptions, Victim
from pressured.policies.common import MIB, killable, mib, process_label, ranking_of
from pressured.policies.patterns import ProcessPattern, any_match
from pressured.scan.plan import Bound, RankKey
from pressured.snapshot import Snapshot


class LargestOptions(PolicyOptions):
    min_mib: float = Field(
        default=0.0, ge=0, description="Ignore processes smaller than this (RSS + swap, MiB)."
    )
    ignore: tuple[ProcessPattern, ...] = Field(
        default=(), description="Patterns whose matches are never chosen by this policy."
    )


def _key(record: ProcessRecord) -> tuple[int, int, int, int]:
    return (record.memory_bytes, record.oom_score_adj, record.start_time, record.pid)


class LargestPolicy(BasePolicy[LargestOptions]):
    """Kill the process with the largest RSS + swap."""

    name: ClassVar[str] = "largest"
    Options = LargestOptions

    def scan_key(self) -> RankKey:
        return RankKey(
            Bound.MEMORY,
            score=lambda p: p.memory_bytes,
            eligible=self._eligible,
            floor=int(self.options.min_mib * MIB),
        )

    def _eligible(self, p: ProcessRecord) -> bool:
        floor = int(self.options.min_mib * MIB)
        return killable(p) and p.memory_bytes >= floor and not any_match(self.options.ignore, p)

    async def __call__(self, snapshot: Snapshot) -> Decision:
        floor = int(self.options.min_mib * MIB)
        ranked = sorted(
            (
                p
                for p in snapshot.candidates
                if killable(p) and p.memory_bytes >= floor and not any_match(self.options.ignore, p)
            ),
            key=_key,
            reverse=True,
        )
        if not ranked:
            floor_text = f"{self.options.min_mib:g} MiB"
            return Decision.no_action(f"no killable process of at least {floor_text}")
        top = ranked[0]
        victim = Victim.process(
            top,
            f"largest RSS + swap {mib(top.memory_bytes):.0f} MiB ({top.comm})",
            rss_bytes=top.rss_bytes,
            swap_bytes=top.swap_bytes,
            oom_score_adj=top.oom_score_adj,
        )
        return Decision.kill(
            victim, ranking=ranking_of((process_label(p), p.memory_bytes) for p in ranked)
        )
