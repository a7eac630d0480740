"""``ScratchGroup.close()`` on the real kernel: it cleans up all it can and says loudly what it
could not. The old close() suppressed every error, gave up on members after a fixed 10 s and
on directories after 50 tries, and returned: two 10,000-process lab groups once leaked that
way, alive, with nothing said."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pressured.kernel import cgroupfs
from pressured.kernel.cgroupfs import Cgroup
from pressured.testing.scratch import (
    FORK_SLEEPERS,
    ScratchGroup,
    ScratchGroupLeak,
    read_until,
    scratch_unavailable_reason,
)
from tests.freezing import frozen_v1

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(
        scratch_unavailable_reason() is not None,
        reason=f"real-kernel test: {scratch_unavailable_reason()}",
    ),
]


def _alive(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_process_that_survives_sigkill_makes_close_raise_naming_it() -> None:
    """A member that cannot die (frozen by the v1 freezer, as a task stuck in the kernel would
    be) makes close() raise, naming the group, the PID and the directory it had to leave; once
    the member can die, close() finishes the job."""
    group = ScratchGroup(None).__enter__()
    group.settle_s = 1.0  # no member exits while frozen: no need to wait the full 10 s
    sleeper = group.spawn(["sleep", "600"], stdout=None)
    try:
        # Frozen before its shell wrapper joined the group, it would not be a member at all.
        deadline = time.monotonic() + 10
        while sleeper.pid not in group.group.all_members():
            assert time.monotonic() < deadline, "the sleeper never joined its group"
            time.sleep(0.01)
        with frozen_v1(sleeper.pid):
            with pytest.raises(ScratchGroupLeak) as caught:
                group.close()
            message = str(caught.value)
            assert group.path in message
            assert str(sleeper.pid) in message
            assert f"could not remove {group.group.directory}" in message
            assert group.group.exists()  # what it said is true: the group is still there
    finally:
        group.close()  # thawed: the SIGKILL already sent now ends it, and the group goes
    assert not group.group.exists()
    assert sleeper.wait(10) == -9


def test_a_process_that_left_the_v2_group_is_still_killed_through_its_memcg() -> None:
    """On a hybrid host a process can leave the v2 group (out of cgroup.kill's reach) and stay
    in the v1 memcg, which it then keeps busy: close() kills it there too and removes both."""
    group = ScratchGroup(None).__enter__()
    if group.memcg_dir is None:
        group.close()
        pytest.skip("needs a hybrid host: the v1 memcg is what the process stays in")
    # A grandchild, so it is not among the processes close() knows it spawned.
    parent = group.spawn(["/bin/sh", "-c", "sleep 600 & echo $!; wait"])
    assert parent.stdout is not None
    escaped = int(parent.stdout.readline())
    own_v2 = cgroupfs.own_cgroup("self")
    assert own_v2 is not None
    try:
        Cgroup(group.layout, own_v2).add(escaped)  # out of the v2 group, still in the memcg
        assert escaped not in group.group.all_members()
        group.close()
        assert not group.group.exists()
        assert group.memcg_dir is not None and not group.memcg_dir.exists()
        deadline = time.monotonic() + 10
        while _alive(escaped) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(escaped), "the process that left the v2 group still runs"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(escaped, signal.SIGKILL)
        with contextlib.suppress(ScratchGroupLeak):
            group.close()


def test_a_group_that_dies_slowly_but_steadily_is_waited_for_to_the_end() -> None:
    """Forked members (not spawned by the test, as a 10,000-process lab group's) that keep
    exiting, one at a time, for longer than the old fixed 10 s: close() waits as long as they
    make progress and then removes everything, instead of giving up with them alive."""
    count, interval_s = 40, 0.5  # the last one can exit 20 s after close() starts
    group = ScratchGroup(None).__enter__()
    parent = group.spawn([sys.executable, "-c", FORK_SLEEPERS, str(count)])
    read_until(parent, b"ready", 60)
    forked = [pid for pid in group.group.all_members() if pid != parent.pid]
    assert len(forked) == count
    with contextlib.ExitStack() as frozen:
        freezers = [frozen.enter_context(frozen_v1(pid)) for pid in forked]

        def thaw_one_at_a_time() -> None:
            for freezer in freezers:
                time.sleep(interval_s)
                (freezer / "freezer.state").write_text("THAWED")

        thawer = threading.Thread(target=thaw_one_at_a_time)
        thawer.start()
        try:
            group.close()
            # What close() left, seen the moment it returned (the cleanup below would hide it).
            left_alive = [pid for pid in forked if _alive(pid)]
            left_group = group.group.exists()
        finally:
            thawer.join()
            with contextlib.suppress(ScratchGroupLeak):
                group.close()  # after a failure above: the rest is thawed by now
    assert left_alive == []
    assert not left_group


def test_closing_twice_is_quiet() -> None:
    """A second close() (the context manager's, after an explicit one) has nothing to do."""
    with ScratchGroup(None) as group:
        group.spawn(["sleep", "600"], stdout=None)
        group.close()
    assert not group.group.exists()


def test_many_forked_members_are_all_gone_after_close() -> None:
    """A group of 1,000 forked sleepers (the many-member victims of the benchmarks) is empty
    and removed when close() returns."""
    group = ScratchGroup(None).__enter__()
    parent = group.spawn([sys.executable, "-c", FORK_SLEEPERS, "1000"])
    try:
        read_until(parent, b"ready", 60)
        assert len(group.group.all_members()) == 1001
    finally:
        group.close()
    assert not group.group.exists()
    assert parent.poll() is not None
    with contextlib.suppress(subprocess.TimeoutExpired):
        parent.wait(1)


HOLDS_A_GROUP = """\
import time

from pressured.testing.scratch import ScratchGroup

with ScratchGroup(None) as group:
    sleeper = group.spawn(["sleep", "600"], stdout=None)
    print(group.name, sleeper.pid, flush=True)
    time.sleep(600)
"""


def test_sigterm_to_a_script_holding_a_group_still_removes_the_group() -> None:
    """SIGTERM (``timeout``, a cancelled CI job, ``kill``) to a script inside ``with
    ScratchGroup()``: the group and what runs in it are gone once the script has exited. At
    SIGTERM's default action the script died without unwinding and left both behind."""
    script = subprocess.Popen(
        [sys.executable, "-c", HOLDS_A_GROUP], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    name, pid = "", 0
    try:
        assert script.stdout is not None
        name, pid_text = script.stdout.readline().decode().split()
        pid = int(pid_text)
        script.send_signal(signal.SIGTERM)
        script.wait(30)
        left_group = ScratchGroup(None, name=name).group.exists()
        left_alive = _alive(pid)
    finally:
        script.kill()
        script.wait()
        if name:
            leftover = ScratchGroup(None, name=name).__enter__()  # adopts what was left
            leftover.close()
    assert not left_group, f"{name} was left behind"
    assert not left_alive, f"pid {pid} was left running"
