"""When a scope's scan may measure storage reads, and the full scan's share of that work.

The probe itself (:mod:`pressured.scan.reads`) costs a wait of ``read_probe_s`` (100 ms for
``culprit``) and two reads of everyone's ``/proc/PID/io``, and it is asked for only when a
family ranking falls back to size. It is worth that only when someone may be thrashing the
page cache without faulting, and such a reader makes its scope **refault**: the pages it
reads again were evicted a moment ago. So a scope runs the probe only if its cumulative
refaults (``memory.stat`` workingset counters, the episode's own recheck figure) rose since
the gate was last asked or since arming. The gate is asked at the moment of the fallback,
not on every snapshot: a decision that never falls back reads no counter. An injected event
on a quiet scope, or a slow leak that evicts nothing, pays one read of ``memory.stat``
(about 85 us here), not the probe; an unreadable counter lets the probe run (the safe
direction: slower, never blind).

A chain scanned in full (a policy before ``culprit`` that wants every record) ranks after
:class:`~pressured.history.ProcessHistory` completed the snapshot's rates;
:func:`complete_read_rates` then runs the same probe where the policy's own ranking falls
back to size, so that path chooses as the fast path does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from pressured.family import present_groups
from pressured.policies.common import omitted_groups
from pressured.scan.plan import FamilyKey
from pressured.scan.reads import ReadProbe, by_identity, make_probe
from pressured.snapshot import Snapshot


class RefaultGate:
    """Opens while the scope's refault counter rises (see the module)."""

    def __init__(self, refaults: Callable[[], int]) -> None:
        self._refaults = refaults
        self._mark: int | None = None

    def mark(self) -> None:
        """Remember the counter now (at arming): the next :meth:`opens` compares with it."""
        self._mark = self._read()

    def opens(self) -> bool:
        """Whether the scope refaulted since the previous call or :meth:`mark` (True when
        either reading failed). Moves the mark to now."""
        before, self._mark = self._mark, self._read()
        return before is None or self._mark is None or self._mark > before

    def _read(self) -> int | None:
        try:
            return self._refaults()
        except (OSError, ValueError):
            return None


def probe_for(keys: Sequence[FamilyKey], proc_root: str, gate: RefaultGate) -> ReadProbe | None:
    """The read probe a scope's snapshots may run (the longest wait the chain's family keys
    ask for), or None when no key asks. The gate is consulted when the probe is called, not
    before: a decision that never falls back to size reads no refault counter."""
    wait_s = max((key.read_probe_s for key in keys), default=0.0)
    if wait_s <= 0:
        return None
    measure = make_probe(proc_root, wait_s)

    def probe(pids: Sequence[int]) -> dict[int, int] | None:
        return measure(pids) if gate.opens() else None

    return probe


def complete_read_rates(
    snapshot: Snapshot, keys: Sequence[FamilyKey], probe: ReadProbe | None
) -> Snapshot:
    """A full scan's ``snapshot`` with :attr:`Snapshot.read_rates` measured where the first
    probing key's own ranking of it falls back to size (as
    :func:`pressured.scan.families.read_families` does on the fast path); else unchanged."""
    key = next((key for key in keys if key.read_probe_s > 0), None)
    if key is None or probe is None or snapshot.read_rates is not None:
        return snapshot
    candidates = snapshot.candidates
    ranked = key.rank(
        candidates,
        snapshot.previous,
        snapshot.taken_monotonic_ns,
        omitted_groups(snapshot),
        reads={},
        present=present_groups(snapshot.processes, snapshot.self_pid),
    )
    if not ranked or ranked[0][0][0]:
        return snapshot
    rates = probe([record.pid for record in candidates])
    if rates is None:
        return snapshot
    return dataclasses.replace(
        snapshot, read_rates=by_identity(rates, (record.identity for record in candidates))
    )
