"""``oom_score``: the kernel's own badness, as the kernel OOM killer (and earlyoom) would choose.

Formula, for every user process in scope whose ``oom_score_adj`` is above -1000 and that no
``ignore`` pattern matches::

    badness = oom_score                       # /proc/<pid>/oom_score, 0..2000
            + prefer_bonus   if a prefer pattern matches
            - avoid_bonus    if an avoid pattern matches

``sort_by = "oom_score"`` (default) kills the highest badness; ties go to the larger
RSS + swap, then the younger process (later start time), then the higher PID.
``sort_by = "rss"`` (earlyoom's ``--sort-by-rss``) ranks by preference first (prefer, plain,
avoid), then by RSS + swap, then badness: the biggest process dies whatever its adj says.

Processes with ``oom_score_adj = -1000`` are never chosen (the kernel's "never kill me"). The
guard enforces that too; the policy skips them so its ranking shows who really could die.
Patterns match name, cmdline, cgroup path and uid: see :mod:`pressured.policies.patterns`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pressured.kernel.procfs import ProcessRecord
from pressured.policies.base import BasePolicy, Decision, PolicyOptions, Victim
from pressured.policies.common import MIB, killable, mib, process_label, ranking_of
from pressured.policies.patterns import ProcessPattern, any_match
from pressured.scan.plan import Bound, PolicyNeed, RankKey
from pressured.snapshot import Snapshot


class OomScoreOptions(PolicyOptions):
    min_rss_mib: float = Field(
        default=0.0, ge=0, description="Ignore processes smaller than this (RSS + swap, MiB)."
    )
    sort_by: Literal["oom_score", "rss"] = Field(
        default="oom_score",
        description="'oom_score': highest adjusted badness dies; 'rss': largest RSS + swap dies.",
    )
    prefer: tuple[ProcessPattern, ...] = Field(
        default=(), description="Patterns whose matches get prefer_bonus added (killed sooner)."
    )
    avoid: tuple[ProcessPattern, ...] = Field(
        default=(), description="Patterns whose matches get avoid_bonus taken off (killed later)."
    )
    ignore: tuple[ProcessPattern, ...] = Field(
        default=(), description="Patterns whose matches are never chosen by this policy."
    )
    prefer_bonus: int = Field(default=300, ge=0, le=2000, description="Added to badness.")
    avoid_bonus: int = Field(default=300, ge=0, le=2000, description="Taken off badness.")


class OomScorePolicy(BasePolicy[OomScoreOptions]):
    """Kill the highest (pattern-adjusted) kernel badness, or the largest with ``sort_by=rss``."""

    name: ClassVar[str] = "oom_score"
    Options = OomScoreOptions

    def scan_key(self) -> PolicyNeed:
        # badness <= oom_score + prefer_bonus; sort_by=rss ranks preference before size, so
        # size alone bounds it only while no pattern can change the preference.
        if self.options.sort_by == "oom_score":
            slack = self.options.prefer_bonus if self.options.prefer else 0
            return RankKey(
                Bound.OOM_SCORE,
                score=self.badness,
                slack=slack,
                eligible=self._ok,
                order=self._key,
            )
        if self.options.prefer or self.options.avoid:
            return None
        return RankKey(Bound.MEMORY, score=lambda p: p.memory_bytes, eligible=self._ok)

    def _ok(self, p: ProcessRecord) -> bool:
        floor = int(self.options.min_rss_mib * MIB)
        return killable(p) and p.memory_bytes >= floor and not any_match(self.options.ignore, p)

    def preference(self, record: ProcessRecord) -> int:
        """+1 preferred, -1 avoided, 0 plain (prefer and avoid both matching cancel out)."""
        return int(any_match(self.options.prefer, record)) - int(
            any_match(self.options.avoid, record)
        )

    def badness(self, record: ProcessRecord) -> int:
        """``oom_score`` adjusted by the prefer/avoid bonuses (earlyoom's rule)."""
        score = record.oom_score
        if any_match(self.options.prefer, record):
            score += self.options.prefer_bonus
        if any_match(self.options.avoid, record):
            score -= self.options.avoid_bonus
        return score

    def _key(self, record: ProcessRecord) -> tuple[int, ...]:
        if self.options.sort_by == "rss":
            return (
                self.preference(record),
                record.memory_bytes,
                self.badness(record),
                record.start_time,
                record.pid,
            )
        return (self.badness(record), record.memory_bytes, record.start_time, record.pid)

    async def __call__(self, snapshot: Snapshot) -> Decision:
        floor = int(self.options.min_rss_mib * MIB)
        ranked = sorted(
            (
                p
                for p in snapshot.candidates
                if killable(p) and p.memory_bytes >= floor and not any_match(self.options.ignore, p)
            ),
            key=self._key,
            reverse=True,
        )
        if not ranked:
            return Decision.no_action("no candidate with oom_score_adj > -1000 in scope")
        top = ranked[0]
        badness = self.badness(top)
        if self.options.sort_by == "rss":
            why = f"largest RSS + swap {mib(top.memory_bytes):.0f} MiB ({top.comm})"
            ranking = ranking_of((process_label(p), p.memory_bytes) for p in ranked)
        else:
            why = f"highest oom_score {badness} ({top.comm}, {mib(top.memory_bytes):.0f} MiB)"
            ranking = ranking_of((process_label(p), self.badness(p)) for p in ranked)
        victim = Victim.process(
            top,
            why,
            oom_score=top.oom_score,
            badness=badness,
            oom_score_adj=top.oom_score_adj,
            rss_bytes=top.rss_bytes,
            swap_bytes=top.swap_bytes,
        )
        return Decision.kill(victim, ranking=ranking)
