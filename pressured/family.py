"""One kill per cause: a process victim takes its family with it.

A process that forked workers shares its cause with them: killing the parent alone leaves the
children thrashing, and killing the children one by one takes one kill (and one cooldown) each.
The **family** of a process is its descendants (children, their children ...) in the snapshot
that stay in its **process group** (``stat`` field 5; fork keeps it, a shell's job control
gives each job its own), minus protected processes and the subtrees below them. A descendant
that left the process group (its own job, a daemon that called ``setsid``) is not family.

A process group's leader also **adopts** the members of its group that have no parent in it:
an orphan (``(cmd &)`` in a shell loop, a double fork: reparented to PID 1 or a subreaper, it
keeps only its process group) and the later commands of a pipeline (children of the shell,
in the job's group). Without that, a loop starting orphaned thrashers lost one of them per
kill and went on; with it, the loop and what it started are one cause. A member whose parent
*is* in the group but may not be killed (protected) stays outside, as before.

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
from pressured.kernel.procfs import ProcessRecord, counts_as_present
from pressured.policies.base import Victim
from pressured.protection import within
from pressured.snapshot import Snapshot

CgroupCheck = Callable[[str, Snapshot], "str | None"]
"""The guard's cgroup protection: why a group must not be killed, or None."""


GroupOf = Callable[[int], "int | None"]
"""The process group of a PID present in the scope (eligible or not), or None if absent. A
zombie, a kernel thread, PID 1 and the daemon count as absent: a zombie parent is a dead one
(its children are orphans in all but name), and the scan's fast path reads none of them, so
both paths must see them the same way (:func:`pressured.scan.families.read_families`)."""


def present_groups(records: Iterable[ProcessRecord], self_pid: int) -> GroupOf:
    """:data:`GroupOf` for a snapshot's ``records``."""
    return {
        r.pid: r.pgid
        for r in records
        if counts_as_present(r.pid, r.state, r.is_kernel_thread, self_pid)
    }.get


def family_links(eligible: Iterable[ProcessRecord], group_of: GroupOf) -> dict[int, int]:
    """Who belongs under whom: PID -> the PID of its parent (an ``eligible`` parent in its
    process group) or of its group's leader (adopted: no parent in the group among the
    processes present, ``group_of``; the leader ``eligible``). Roots have no entry. A parent
    that is there but not eligible (protected, a zombie) keeps its descendants out of the
    family, and is told apart from a parent that is gone."""
    by_pid = {record.pid: record for record in eligible}
    links: dict[int, int] = {}
    for record in by_pid.values():
        if record.ppid != record.pid and group_of(record.ppid) == record.pgid:
            if record.ppid in by_pid:
                links[record.pid] = record.ppid
            continue  # below a process that may not die: not family
        leader = by_pid.get(record.pgid)
        if leader is not None and leader.pid != record.pid and leader.pgid == leader.pid:
            links[record.pid] = leader.pid
    return links


def _below(links: Mapping[int, int]) -> dict[int, list[int]]:
    below: dict[int, list[int]] = {}
    for pid, above in links.items():
        below.setdefault(above, []).append(pid)
    return below


def family_of(
    root: ProcessRecord, eligible: Iterable[ProcessRecord], group_of: GroupOf
) -> list[ProcessRecord]:
    """``root``'s family among ``eligible``: everyone linked below it (descendants in its
    process group, and, for a group leader, the members it adopts; see the module)."""
    by_pid = {record.pid: record for record in eligible}
    below = _below(family_links(by_pid.values(), group_of))
    return _descend(root.pid, below, by_pid, set())


def _descend(
    root: int,
    below: Mapping[int, list[int]],
    by_pid: Mapping[int, ProcessRecord],
    placed: set[int],
) -> list[ProcessRecord]:
    """Everyone linked below ``root`` and not in ``placed`` yet (``root`` and they are added
    to it: a member is placed in one family only)."""
    members: list[ProcessRecord] = []
    stack = [root]
    placed.add(root)
    while stack:
        for pid in below.get(stack.pop(), ()):
            if pid not in placed:
                placed.add(pid)
                members.append(by_pid[pid])
                stack.append(pid)
    return members


def family_roots(
    records: Iterable[ProcessRecord], group_of: GroupOf | None = None
) -> list[tuple[ProcessRecord, list[ProcessRecord]]]:
    """Partition ``records`` (the killable candidates) into families, each a root and the
    records linked below it (:func:`family_links`; ``group_of`` defaults to ``records``'
    groups). A cycle of links (a parent that joined its child's group) is broken at its
    first member."""
    candidates = {record.pid: record for record in records}
    links = family_links(
        candidates.values(),
        {r.pid: r.pgid for r in candidates.values()}.get if group_of is None else group_of,
    )
    below = _below(links)
    families: list[tuple[ProcessRecord, list[ProcessRecord]]] = []
    placed: set[int] = set()
    for pid, record in candidates.items():
        if pid not in links:
            families.append((record, _descend(pid, below, candidates, placed)))
    for pid, record in candidates.items():
        if pid not in placed:  # on a cycle of links: no root above it
            families.append((record, _descend(pid, below, candidates, placed)))
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
    eligible = [
        r
        for r in snapshot.processes
        if r.pid not in excluded and not r.is_kernel_thread and r.state != "Z"
    ]
    family = family_of(root, eligible, present_groups(snapshot.processes, snapshot.self_pid))
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
