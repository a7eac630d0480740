"""A snapshot never raises for what it reads: cgroup shapes and vanished groups become
counted scan problems (issue #11 item 2, the snapshot half)."""

from __future__ import annotations

import errno
import subprocess
import time

import pytest

from pressured.events import EventSource, PressureEvent
from pressured.kernel.cgroupfs import Cgroup
from pressured.snapshot import take_snapshot
from pressured.testing.scratch import ScratchGroup

EVENT = PressureEvent(scope="test", level="some", source=EventSource.MANUAL)


def make_threaded_child(scratch: ScratchGroup) -> Cgroup:
    child = Cgroup(scratch.layout, f"{scratch.path}/threads").create()
    try:
        (child.directory / "cgroup.type").write_text("threaded")
    except OSError as exc:
        pytest.skip(f"this kernel refuses a threaded child here: {exc}")
    return child


def test_threaded_child_group_does_not_make_the_snapshot_raise(scratch: ScratchGroup) -> None:
    """cgroup.procs of a threaded child fails with EOPNOTSUPP: a problem, not an exception."""
    sleeper = scratch.spawn(["sleep", "60"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while sleeper.pid not in scratch.group.all_members():  # joined before exec
        assert time.monotonic() < deadline, "the sleeper never joined its group"
        time.sleep(0.01)
    child = make_threaded_child(scratch)
    with pytest.raises(OSError) as raised:
        (child.directory / "cgroup.procs").read_text()
    assert raised.value.errno == errno.EOPNOTSUPP  # the kernel fact this test rests on
    snapshot = take_snapshot(
        EVENT,
        layout=scratch.layout,
        cgroup_path=scratch.path,
        memcg_v1_path=scratch.memcg_path,
    )
    # Counted in pressured_scan_problems_total: tests/test_supervision.py checks it.
    assert any("threads" in problem.problem for problem in snapshot.problems)
    assert sleeper.pid in {record.pid for record in snapshot.processes}


def test_removed_scope_group_is_a_problem_not_an_exception(scratch: ScratchGroup) -> None:
    """A scope whose group is gone gets an empty snapshot with the reason, never a raise."""
    snapshot = take_snapshot(EVENT, layout=scratch.layout, cgroup_path=f"{scratch.path}/never-made")
    assert snapshot.processes == ()
    assert any("gone" in problem.problem for problem in snapshot.problems)
