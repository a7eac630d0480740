"""``rss_growth``: kill the process whose memory grew fastest over a recent horizon.

What the built-ins do not do: they judge a process by its size *now*. A leak is better told
by its slope: a 300 MiB process that gained 250 MiB in ten seconds is the likely cause of the
pressure, not the steady 2 GiB database beside it.

State: for every process, keyed by ``(pid, start_time)`` so a reused PID starts afresh, the
policy keeps samples ``(snapshot time, RSS + swap)`` from the calls it sees, at most
``max_samples`` and none older than ``horizon_s``. Processes gone from the snapshot are
forgotten, so the state stays as small as the scope.

Formula, per user process with ``oom_score_adj`` above -1000:

    oldest  = the earliest kept sample (within horizon_s)
    span    = now - oldest.time                 (must be >= min_span_s)
    growth  = memory_now - oldest.memory        (must be >= min_growth_mib)
    rate    = growth / span                     (bytes per second)

The highest rate dies; ties go to the larger growth, then the younger process. The first call
only records samples: with no history there is no growth to judge, so no action.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from pressured.kernel.procfs import ProcessRecord
from pressured.policies import BasePolicy, Decision, PolicyOptions, Victim
from pressured.snapshot import Snapshot

MIB = 2**20
NS_PER_S = 1_000_000_000


class RssGrowthOptions(PolicyOptions):
    horizon_s: float = Field(
        default=30.0, gt=0, le=3600, description="How far back growth is measured (seconds)."
    )
    min_span_s: float = Field(
        default=1.0,
        ge=0,
        description="History needed before a process is judged (seconds between samples).",
    )
    min_growth_mib: float = Field(
        default=32.0, ge=0, description="Growth over the kept history that counts (MiB)."
    )
    max_samples: int = Field(default=64, ge=2, le=10_000, description="Samples kept per process.")


@dataclass(frozen=True, slots=True)
class Growth:
    process: ProcessRecord
    growth_bytes: int
    span_s: float

    @property
    def rate(self) -> float:
        """Bytes per second over the kept history."""
        return self.growth_bytes / self.span_s


class RssGrowthPolicy(BasePolicy[RssGrowthOptions]):
    """Kill the process whose RSS + swap grew fastest over the last ``horizon_s``."""

    name: ClassVar[str] = "rss_growth"
    Options = RssGrowthOptions

    def __init__(self, options: RssGrowthOptions) -> None:
        super().__init__(options)
        self.history: dict[tuple[int, int], deque[tuple[int, int]]] = {}
        """(pid, start_time) -> samples of (monotonic ns, RSS + swap bytes), oldest first."""

    def _record(self, snapshot: Snapshot) -> list[Growth]:
        now = snapshot.taken_monotonic_ns
        oldest_allowed = now - int(self.options.horizon_s * NS_PER_S)
        seen: dict[tuple[int, int], deque[tuple[int, int]]] = {}
        measured = []
        for process in snapshot.candidates:
            if process.oom_score_adj <= -1000:
                continue
            samples = self.history.get(process.identity)
            if samples is None:
                samples = deque(maxlen=self.options.max_samples)
            while samples and samples[0][0] < oldest_allowed:
                samples.popleft()
            if not samples or samples[-1][0] < now:
                samples.append((now, process.memory_bytes))
            seen[process.identity] = samples
            first_time, first_bytes = samples[0]
            span_s = (now - first_time) / NS_PER_S
            if span_s > 0 and span_s >= self.options.min_span_s:
                measured.append(Growth(process, process.memory_bytes - first_bytes, span_s))
        self.history = seen  # processes that left the snapshot are forgotten
        return measured

    async def __call__(self, snapshot: Snapshot) -> Decision:
        measured = self._record(snapshot)
        floor = self.options.min_growth_mib * MIB
        growing = [g for g in measured if g.growth_bytes >= floor and g.growth_bytes > 0]
        if not growing:
            return Decision.no_action(
                f"no process grew by {self.options.min_growth_mib:g} MiB within "
                f"{self.options.horizon_s:g} s ({len(measured)} with enough history)"
            )
        growing.sort(key=lambda g: (g.rate, g.growth_bytes, g.process.start_time), reverse=True)
        top = growing[0]
        victim = Victim.process(
            top.process,
            f"{top.process.comm} grew {top.growth_bytes / MIB:.0f} MiB in {top.span_s:.1f} s "
            f"({top.rate / MIB:.1f} MiB/s), the fastest in scope",
            growth_bytes=top.growth_bytes,
            span_s=round(top.span_s, 3),
            rate_bytes_per_s=round(top.rate),
            rss_bytes=top.process.rss_bytes,
        )
        ranking = tuple(
            (f"{g.process.pid} {g.process.comm}", f"{g.rate / MIB:.1f} MiB/s") for g in growing[:5]
        )
        return Decision.kill(victim, ranking=ranking)
