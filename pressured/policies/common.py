"""Small helpers the built-in policies share: the "never kill" marking, the scope's child
cgroups, oomd's prefer/avoid tiers, and how evidence is written into a ranking.

Kept here so every built-in reads the same facts the same way; plugins may use them too.
"""

from __future__ import annotations

from collections.abc import Iterable

from pressured.kernel.procfs import ProcessRecord
from pressured.snapshot import CgroupRecord, Snapshot

OOM_SCORE_ADJ_MIN = -1000
"""``oom_score_adj`` of a process the kernel must never kill; no policy chooses it either."""
MIB = 2**20
RANKING_LENGTH = 5
"""How many entries of a ranking travel as evidence with a decision."""


def mib(value: int | float) -> float:
    return value / MIB


def killable(record: ProcessRecord) -> bool:
    """Whether a process may be ranked at all: not marked "never kill" by the kernel's rule."""
    return record.oom_score_adj > OOM_SCORE_ADJ_MIN and not record.is_kernel_thread


def process_label(record: ProcessRecord) -> str:
    return f"{record.pid} {record.comm}"


def child_cgroups(snapshot: Snapshot) -> tuple[CgroupRecord, ...]:
    """The scope group's direct children: every cgroup record but the first (the scope).

    A system scope has no cgroup records, so cgroup policies take no action there.
    """
    return snapshot.cgroups[1:]


def omitted_groups(snapshot: Snapshot) -> tuple[str, ...]:
    """Paths of the scope's child groups marked ``oomd_omit`` (systemd's
    ``ManagedOOMPreference=omit``): no policy chooses them or the processes inside."""
    return tuple(g.path for g in child_cgroups(snapshot) if g.omit)


def oomd_tier(record: CgroupRecord, honour_xattrs: bool = True) -> int:
    """oomd's ordering: ``oomd_prefer`` groups first (0), plain ones next (1), ``oomd_avoid``
    last (2). A group marked both counts as plain: the markings cancel."""
    if not honour_xattrs or record.prefer == record.avoid:
        return 1
    return 0 if record.prefer else 2


def ranking_of(
    items: Iterable[tuple[str, float | int | str]], length: int = RANKING_LENGTH
) -> tuple[tuple[str, float | int | str], ...]:
    """The first ``length`` (target, score) pairs, as a :class:`Decision` carries them."""
    out: list[tuple[str, float | int | str]] = []
    for item in items:
        if len(out) >= length:
            break
        out.append(item)
    return tuple(out)
