"""One kill per cause: a process victim takes its family with it.

A process that forked workers shares its cause with them: killing the parent alone leaves the
children thrashing, and killing the children one by one takes one kill (and one cooldown) each.
The **family** of a process is its descendants (children, their children ...) in the snapshot
that stay in its **process group** (``stat`` field 5; fork keeps it, a shell's job control
gives each job its own), minus protected processes and the subtrees below them. A descendant
that left the process group (its own job, a daemon that called ``setsid``) is not family.

:func:`expand` turns a chosen process victim into the kill of its family:

* when the victim's leaf cgroup holds exactly the victim and its family (and is not the
  scope's own group nor protected), into a **cgroup victim** (one ``cgroup.kill`` takes them
  all, even those forked after the snapshot);
* otherwise, into the same process victim with :attr:`Victim.family` listing every family
  member's ``(pid, start_time)`` (the actuator kills each through its pidfd).

The reason says so either way. Pure functions over the snapshot: the guard re-checks the
expanded victim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from pressured.events import VictimKind
from pressured.kernel.procfs import ProcessRecord
from pressured.policies.base import Victim
from pressured.protection import within
from pressured.snapshot import Snapshot

CgroupCheck = Callable[[str, Snapshot], "str | None"]
"""The guard's cgroup protection: why a group must not be killed, or None."""


def children_by_parent(records: Iterable[ProcessRecord]) -> dict[int, list[ProcessRecord]]:
    children: dict[int, list[ProcessRecord]] = {}
    for record in records:
        children.setdefault(record.ppid, []).append(record)
    return children


def family_of(
    root: ProcessRecord,
    children: Mapping[int, list[ProcessRecord]],
    eligible: Callable[[ProcessRecord], bool],
) -> list[ProcessRecord]:
    """``root``'s descendants in its process group, walking only through ``eligible`` ones
    (a protected process is not family, nor is anything below it)."""
    members: list[ProcessRecord] = []
    stack = [root.pid]
    seen = {root.pid}
    while stack:
        for child in children.get(stack.pop(), ()):
            if child.pid in seen or child.pgid != root.pgid or not eligible(child):
                continue
            seen.add(child.pid)
            members.append(child)
            stack.append(child.pid)
    return members


def family_roots(
    records: Iterable[ProcessRecord],
) -> list[tuple[ProcessRecord, list[ProcessRecord]]]:
    """Partition ``records`` (the killable candidates) into families: each record whose parent
    is not a candidate of the same process group is a root; the rest belong to a root."""
    candidates = list(records)
    by_pid = {record.pid: record for record in candidates}
    children = children_by_parent(candidates)
    families = []
    for record in candidates:
        parent = by_pid.get(record.ppid)
        if parent is not None and parent.pgid == record.pgid and parent.pid != record.pid:
            continue
        families.append((record, family_of(record, children, lambda r: r.pid in by_pid)))
    return families


def leaf_cgroup_is_family(
    victim: ProcessRecord, family: list[ProcessRecord], snapshot: Snapshot
) -> bool:
    """Whether the victim's leaf cgroup holds exactly the victim and its family."""
    if victim.cgroup is None:
        return False
    if not snapshot.complete:
        return False  # an unread process in the group would die with it unseen
    expected = {victim.pid, *(member.pid for member in family)}
    in_group = {p.pid for p in snapshot.processes if within(p.cgroup, (victim.cgroup,))}
    if in_group != expected:
        return False
    # A subgroup below the leaf would be killed too: its members must be family as well.
    record = snapshot.cgroup(victim.cgroup)
    return record is None or set(record.pids) <= expected


def expand(victim: Victim, snapshot: Snapshot, cgroup_check: CgroupCheck | None = None) -> Victim:
    """The victim with its family: a cgroup victim where its leaf group is just that family,
    else a process victim whose :attr:`Victim.family` lists the descendants. A victim without
    family (or not a process) comes back unchanged."""
    if victim.kind is not VictimKind.PROCESS or victim.pid is None:
        return victim
    root = snapshot.process(victim.pid)
    if root is None or (victim.start_time is not None and root.start_time != victim.start_time):
        return victim
    excluded = set(snapshot.protected) | {1, snapshot.self_pid}
    children = children_by_parent(snapshot.processes)
    family = family_of(
        root,
        children,
        lambda r: r.pid not in excluded and not r.is_kernel_thread and r.state != "Z",
    )
    scope_group = snapshot.cgroups[0].path if snapshot.cgroups else None
    if (
        root.cgroup is not None
        and root.cgroup not in ("", "/", scope_group)
        and leaf_cgroup_is_family(root, family, snapshot)
        and (cgroup_check is None or cgroup_check(root.cgroup, snapshot) is None)
    ):
        return dataclasses.replace(
            victim,
            kind=VictimKind.CGROUP,
            pid=None,
            start_time=None,
            reason=f"{victim.reason}; whole cgroup {root.cgroup} (it holds just pid "
            f"{root.pid} and its {len(family)} descendant(s))",
            figures={**victim.figures, "family_kind": "cgroup", "family_size": len(family) + 1},
            family=(),
        )
    if not family:
        return victim
    return dataclasses.replace(
        victim,
        reason=f"{victim.reason}; with its family of {len(family)} descendant(s) in process "
        f"group {root.pgid}",
        figures={**victim.figures, "family_kind": "process_group", "family_size": len(family) + 1},
        family=tuple(member.identity for member in family),
    )
