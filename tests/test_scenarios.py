"""Victim choice on the real kernel: the default chain kills the cause, once, whatever it calls
itself, and no bystander dies.

Each scenario (``pressured.testing.culprits``) is a small scratch cgroup with a memory limit,
bystanders started first, then a ``pressured run`` daemon watching that group only (default
policy chain, default protections), then the culprit. The test waits for the culprit's death,
then for three more trigger windows, and checks that there was exactly one kill and that every
bystander still runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from pressured.kernel.cgroupfs import Cgroup
from pressured.snapshot import read_cgroup_record
from pressured.testing.culprits import Staged, alive, by_name, staged_group
from pressured.testing.daemon import Daemon, LogLine, scope_config, write_config
from pressured.testing.scratch import ScratchGroup

pytestmark = [pytest.mark.kernel, pytest.mark.pressure]

KILL_TIMEOUT_S = 60.0
DEATH_TIMEOUT_S = 30.0
SETTLE_S = 6.0
"""Three unprivileged trigger windows after the culprit died: time for a wrong second kill."""


def _wait_dead(pids: list[int], timeout_s: float) -> list[int]:
    """Wait until every pid is gone; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _run(name: str, thrash_file: str, tmp_path: Path) -> tuple[Staged, list[LogLine], Daemon]:
    """Run one scenario with the default chain; return what was staged and the kill lines."""
    scenario = by_name(name)
    with staged_group(scenario) as (group, bystanders):
        # No [[scopes.policies]]: the default chain decides.
        config = write_config(
            tmp_path / "p.toml", scope_config(group.path, group.memcg_path, policies="")
        )
        with Daemon(config) as daemon:
            daemon.wait_for("controller.ready", 20)
            staged = scenario.culprit(group, thrash_file)
            staged.bystanders = bystanders
            daemon.wait_for("victim.killed", KILL_TIMEOUT_S)
            survivors = _wait_dead(staged.culprits, DEATH_TIMEOUT_S)
            assert not survivors, f"culprit processes still alive: {survivors}"
            time.sleep(SETTLE_S)
            dead = {label: pid for label, pid in bystanders.items() if not alive(pid)}
            assert not dead, f"bystanders died: {dead}; kills: {daemon.events('victim.killed')}"
            kills = daemon.events("victim.killed")
            daemon.stop()
        return staged, kills, daemon


def _the_one_kill(kills: list[LogLine]) -> dict[str, Any]:
    assert len(kills) == 1, [(k["target"], k["policy"], k["reason"]) for k in kills]
    return kills[0]


def test_impostor_named_sshd_is_killed_not_the_bystanders(thrash_file: str, tmp_path: Path) -> None:
    """A thrasher named sshd (comm and cmdline) dies in one kill; bystanders live."""
    staged, kills, daemon = _run("impostor", thrash_file, tmp_path)
    kill = _the_one_kill(kills)
    assert kill["pid"] == staged.culprits[0]
    assert kill["comm"] == "sshd"
    assert kill["policy"] == "culprit"
    assert not [
        line
        for line in daemon.events("protection.largest_excluded")
        if line["pid"] == staged.culprits[0]
    ]


def test_growing_thrasher_dies_before_the_big_idle_process(
    thrash_file: str, tmp_path: Path
) -> None:
    """The smaller process causing the thrash dies; the 110 MiB idle one is left alone."""
    staged, kills, _ = _run("idle-vs-grower", thrash_file, tmp_path)
    kill = _the_one_kill(kills)
    assert kill["pid"] == staged.culprits[0]
    assert kill["figures"]["rule"] == "demand"
    # The evidence names every ranked family with its figures, the idle one included.
    assert len(kill["ranking"]) >= 2
    assert all("demand" in str(evidence) for _, evidence in kill["ranking"])


def test_forking_hog_dies_with_its_children_in_one_kill(thrash_file: str, tmp_path: Path) -> None:
    """Parent + 8 thrashing children: one decision kills the family, not one child at a time."""
    staged, kills, _ = _run("forking-hog", thrash_file, tmp_path)
    kill = _the_one_kill(kills)
    assert kill["pid"] == staged.culprits[0]
    assert kill["figures"]["family_kind"] == "process_group"
    assert kill["figures"]["family_size"] == 9


def test_forking_hog_in_its_own_group_dies_by_one_cgroup_kill(
    thrash_file: str, tmp_path: Path
) -> None:
    """The family alone in its leaf cgroup: the process victim becomes that group's cgroup.kill."""
    staged, kills, _ = _run("forking-hog-own-group", thrash_file, tmp_path)
    kill = _the_one_kill(kills)
    assert kill["kind"] == "cgroup"
    assert kill["cgroup"] == staged.culprit_group
    assert "whole cgroup" in kill["reason"]


def test_hog_in_a_group_named_ssh_service_is_not_protected(
    thrash_file: str, tmp_path: Path
) -> None:
    """Only /system.slice/ssh.service is protected, not any group that borrows the name."""
    staged, kills, _ = _run("ssh.service-lookalike", thrash_file, tmp_path)
    kill = _the_one_kill(kills)
    assert kill["cgroup"] == staged.culprit_group


def test_a_loop_of_short_lived_thrashers_dies_with_the_loop(
    thrash_file: str, tmp_path: Path
) -> None:
    """Each child thrashes for half a second and exits; the loop that forks the next one
    faults nothing. One kill takes the loop with its current child (the family): killing only
    the child would leave the cause to fork another."""
    staged, kills, _ = _run("churner", thrash_file, tmp_path)
    kill = _the_one_kill(kills)
    assert kill["pid"] == staged.culprits[0]
    assert kill["policy"] == "culprit"


def test_a_loop_of_orphaned_thrashers_dies_with_the_loop(thrash_file: str, tmp_path: Path) -> None:
    """A shell loop starts a thrasher that orphans itself (reparented away, still in the loop's
    process group) every half second; the loop faults next to nothing. Its group's leader
    adopts the orphans, so the loop dies with them. It used to survive: each kill took one
    thrasher, the loop started the next, and the stall never ended."""
    staged, kills, _ = _run("orphaning-churner", thrash_file, tmp_path)
    kill = _the_one_kill(kills)
    assert kill["pid"] == staged.culprits[0]


def test_hog_with_lower_adj_than_a_bystander_still_dies(thrash_file: str, tmp_path: Path) -> None:
    """oom_score_adj 900 on a quiet bystander does not make it the victim of a thrasher at 0."""
    staged, kills, _ = _run("low-adj-hog", thrash_file, tmp_path)
    kill = _the_one_kill(kills)
    assert kill["pid"] == staged.culprits[0]


def test_read_thrasher_dies_before_the_idle_process(thrash_file: str, tmp_path: Path) -> None:
    """The process re-reading a file through read(2) since before the daemon started causes
    the stall, with almost no page faults; the idle 60 MiB one is left (the size fallback
    took it before culprit counted storage reads as demand)."""
    staged, kills, _ = _run("read-thrasher", thrash_file, tmp_path)
    kill = _the_one_kill(kills)
    assert kill["pid"] == staged.culprits[0]
    assert kill["policy"] == "culprit"
    assert "reading from storage" in kill["reason"], kill["reason"]


def test_oomd_omit_xattr_is_read_and_the_group_never_chosen(scratch: ScratchGroup) -> None:
    """systemd's user.oomd_omit on a child group is read into its cgroup record (and a plain
    group's is not). That no policy kills inside such a group is
    tests/test_protection_omit.py's."""
    child: Cgroup = scratch.child("omitted")
    try:
        os.setxattr(child.directory, "user.oomd_omit", b"1")
    except OSError as exc:
        pytest.skip(f"this kernel refuses user xattrs on cgroupfs: {exc}")
    assert read_cgroup_record(child).omit
    plain = scratch.child("plain")
    assert not read_cgroup_record(plain).omit


def test_protected_largest_consumer_is_named_in_a_warning(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path
) -> None:
    """A protected 100 MiB process is the largest in scope: each decision says so, loudly,
    with its size and the rule, and the thrasher beside it dies."""
    scratch.set_limit(192 << 20)
    database = scratch.child("db")
    config = write_config(
        tmp_path / "p.toml",
        scope_config(
            scratch.path,
            scratch.memcg_path,
            policies="",
            extra_guard=f'protect_cgroups = ["{database.path}"]\n',
        ),
    )
    big = scratch.spawn_workload("hog", "100", group=database)
    with Daemon(config) as daemon:
        daemon.wait_for("controller.ready", 20)
        thrasher = scratch.spawn_workload("thrash", thrash_file)
        kill = daemon.wait_for("victim.killed", KILL_TIMEOUT_S)
        assert kill["pid"] == thrasher.pid
        warning = daemon.wait_for("protection.largest_excluded", 5)
        assert warning["level"] == "warning"
        assert warning["pid"] == big.pid
        assert warning["bytes"] >= 100 << 20
        assert database.path in warning["rule"]
        daemon.stop()
    assert big.poll() is None
