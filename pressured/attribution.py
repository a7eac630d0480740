"""Whether a recheck's refaults are anyone's doing.

An episode's recheck (pressured/episode.py) is the scope's own inference, not the kernel's: the
scope's cumulative refaults grew fast. Acting on it means a policy picks a victim, and when no
process shows demand the default chain falls back to size. That is right for a kernel trigger
(the stall is real, someone must go), but a recheck's refaults can come from nobody alive: in CI
one came 1.2 s after a ``cgroup.kill`` of the thrashing group, while every live process in
scope slept, and the size fallback took a 35 MiB bystander. So a recheck acts only when the
live processes' own page faults over the sampled interval reach the refault rate that raised
it; otherwise it waits for the trigger, which fires again if the stall is real.
"""

from __future__ import annotations

from pressured.events import EventSource, PressureEvent
from pressured.history import measure
from pressured.kernel.procfs import PAGE_SIZE
from pressured.snapshot import Snapshot


def unattributed_recheck(
    event: PressureEvent, snapshot: Snapshot, refaults_per_s: float
) -> str | None:
    """Why ``event``, a recheck, names no one to act on; None when it may act.

    Without per-process samples (no history kept for this chain) the rule cannot be applied
    and the recheck acts as before.
    """
    if event.source is not EventSource.RECHECK:
        return None
    fault_bytes_per_s, _growth, _majflt, interval_s = measure(
        snapshot.candidates, snapshot.previous, snapshot.taken_monotonic_ns
    )
    if interval_s is None:
        return None
    faults_per_s = fault_bytes_per_s / PAGE_SIZE
    if faults_per_s >= refaults_per_s:
        return None
    return (
        f"recheck: the scope refaulted but its killable processes fault only "
        f"{faults_per_s:.0f} pages/s over {interval_s:.2f} s (below {refaults_per_s:g}): "
        "nobody alive is thrashing; the trigger decides if the stall goes on"
    )
