"""``oom_score``: the kernel's own badness, as the kernel OOM killer would choose.

Score: ``/proc/<pid>/oom_score`` (0..2000; memory share scaled by ``oom_score_adj``). The
highest score dies; ties go to the larger RSS + swap, then the younger process. Processes with
``oom_score_adj = -1000`` are never chosen (the kernel's "never kill me" marking).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from pressured.kernel.procfs import ProcessRecord
from pressured.policies.base import BasePolicy, Decision, PolicyOptions, Victim
from pressured.snapshot import Snapshot

OOM_SCORE_ADJ_MIN = -1000


class OomScoreOptions(PolicyOptions):
    min_rss_mib: float = Field(
        default=0.0, ge=0, description="Ignore processes smaller than this (RSS + swap)."
    )


def _sort_key(record: ProcessRecord) -> tuple[int, int, int]:
    return (record.oom_score, record.memory_bytes, record.start_time)


class OomScorePolicy(BasePolicy[OomScoreOptions]):
    name: ClassVar[str] = "oom_score"
    Options = OomScoreOptions

    async def __call__(self, snapshot: Snapshot) -> Decision:
        floor = int(self.options.min_rss_mib * 2**20)
        ranked = sorted(
            (
                p
                for p in snapshot.candidates
                if p.oom_score_adj > OOM_SCORE_ADJ_MIN and p.memory_bytes >= floor
            ),
            key=_sort_key,
            reverse=True,
        )
        if not ranked:
            return Decision.no_action("no candidate with oom_score_adj > -1000 in scope")
        top = ranked[0]
        victim = Victim.process(
            top,
            f"highest oom_score {top.oom_score} ({top.comm}, {top.memory_bytes / 2**20:.0f} MiB)",
            oom_score=top.oom_score,
            oom_score_adj=top.oom_score_adj,
            rss_bytes=top.rss_bytes,
            swap_bytes=top.swap_bytes,
        )
        ranking = tuple((f"{p.pid} {p.comm}", p.oom_score) for p in ranked[:5])
        return Decision.kill(victim, ranking=ranking)
