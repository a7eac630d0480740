"""Per-stage timestamps of one decision, from the event's creation to the decision.

The decision path crosses the loop and a worker thread several times; when it is slow, which
crossing waited is the whole question. Each stage is a :func:`time.monotonic_ns` mark, turned
into milliseconds after the event for the kill record (``stages_ms``) and the log.
"""

from __future__ import annotations

import time

STAGES = (
    "dequeued",  # the scope's task took the event off its queue
    "handling",  # handle() began (after any episode bookkeeping)
    "emitted",  # event sinks done (log line, subscribers)
    "scan_start",  # the scan began on its worker thread
    "cgroups_read",  # meminfo, member walk and cgroup records done; processes next
    "scan_end",
    "snapshot",  # the snapshot was back on the loop
    "decided",  # the policy chain and guard were done
)


class StageClock:
    """Marks for one event; ``ms()`` gives them relative to the event's timestamp."""

    def __init__(self, event_ns: int) -> None:
        self.event_ns = event_ns
        self.marks: dict[str, int] = {}

    def mark(self, stage: str, at_ns: int | None = None) -> None:
        self.marks[stage] = time.monotonic_ns() if at_ns is None else at_ns

    def ms(self) -> dict[str, float]:
        return {
            stage: round((self.marks[stage] - self.event_ns) / 1e6, 3)
            for stage in STAGES
            if stage in self.marks
        }
