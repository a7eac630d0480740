"""Kernel facts docs/design.md rests on, checked on the real kernel (root, cgroup2, PSI).

Each test reproduces one fact the design depends on, so a kernel that behaves differently
fails here, by name, before it fails somewhere subtle in the controller.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pressured.episode import read_refaults
from pressured.kernel import pidfd, psi
from pressured.kernel.caps import CAP_SYS_RESOURCE, has_capability
from pressured.starvation import FROZEN_STALL_US_PER_REFAULT
from pressured.testing.scratch import ScratchGroup
from tests.test_starvation import frequent_reader

pytestmark = pytest.mark.kernel

_TRIGGER = b"some 150000 2000000\0"  # legal with or without CAP_SYS_RESOURCE
_HOLDER = """
block = bytearray(64 << 20)
for offset in range(0, len(block), 4096):
    block[offset] = 1
print("ready", flush=True)
import time
time.sleep(60)
"""


@contextlib.contextmanager
def armed_trigger(directory: Path) -> Iterator[int]:
    fd = os.open(directory / "memory.pressure", os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, _TRIGGER)
        yield fd
    finally:
        os.close(fd)


def poll_once(fd: int) -> int:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    ready = poller.poll(0)
    return ready[0][1] if ready else 0


def test_psi_trigger_fd_is_always_readable_and_only_pollpri_marks_an_event(
    scratch: ScratchGroup,
) -> None:
    """An armed trigger on an idle group polls POLLIN (always) without POLLPRI: a loop's
    add_reader (POLLIN) would wake forever; POLLPRI alone is the event."""
    with armed_trigger(scratch.group.directory) as fd:
        for _ in range(3):
            mask = poll_once(fd)
            assert mask & select.POLLIN
            assert not mask & select.POLLPRI


def test_removed_group_trigger_reports_pri_and_err_on_every_poll(scratch: ScratchGroup) -> None:
    """After rmdir of a group with an armed trigger, every poll says POLLPRI|POLLERR: a
    monitor that treats POLLPRI as an event spins until it closes the fd."""
    directory = scratch.group.directory / "removed"
    directory.mkdir()
    try:
        with armed_trigger(directory) as fd:
            assert not poll_once(fd) & select.POLLPRI
            directory.rmdir()
            masks = [poll_once(fd) for _ in range(5)]
    finally:
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()
    assert all(mask & select.POLLPRI and mask & select.POLLERR for mask in masks), masks


def test_threaded_group_cgroup_procs_is_eopnotsupp(scratch: ScratchGroup) -> None:
    """Reading cgroup.procs of a threaded group fails with EOPNOTSUPP (its threads are in
    cgroup.threads); anyone with a delegated subtree can make one."""
    directory = scratch.group.directory / "threaded"
    directory.mkdir()
    try:
        (directory / "cgroup.type").write_text("threaded")
        assert (directory / "cgroup.type").read_text().strip() == "threaded"
        with pytest.raises(OSError) as raised:
            (directory / "cgroup.procs").read_text()
        assert raised.value.errno == errno.EOPNOTSUPP
        assert (directory / "cgroup.threads").read_text() == ""
    finally:
        directory.rmdir()


def test_cgroup_names_may_hold_escape_sequences_but_not_newlines(scratch: ScratchGroup) -> None:
    """mkdir of a cgroup named with ESC, BEL, a tab or a bidi override succeeds; a newline is
    refused with EINVAL (names are printed one per line in /proc/PID/cgroup)."""
    accepted = ["esc\x1b[2Jname", "bel\x07name", "tab\tname", "bidi\u202etxt"]
    for name in accepted:
        directory = scratch.group.directory / name
        directory.mkdir()
        directory.rmdir()
    with pytest.raises(OSError) as raised:
        (scratch.group.directory / "new\nline").mkdir()
    assert raised.value.errno == errno.EINVAL


def _freezer_root() -> Path | None:
    root = Path("/sys/fs/cgroup/freezer")
    return root if (root / "cgroup.procs").exists() and os.geteuid() == 0 else None


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(_freezer_root() is None, reason="needs root and the v1 freezer hierarchy")
def test_frozen_victim_is_reaped_by_mrelease_but_exits_only_when_thawed() -> None:
    """A task frozen by the v1 freezer cannot exit after SIGKILL, yet process_mrelease frees
    its memory at once; thawed, it exits."""
    root = _freezer_root()
    assert root is not None
    group = root / f"pressured-fact-{uuid.uuid4().hex[:10]}"
    group.mkdir()
    child = subprocess.Popen([sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE)
    fd = -1
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert _rss_kib(child.pid) > 60 << 10
        (group / "cgroup.procs").write_text(str(child.pid))
        (group / "freezer.state").write_text("FROZEN")
        deadline = time.monotonic() + 5
        while (group / "freezer.state").read_text().strip() != "FROZEN":
            assert time.monotonic() < deadline, "the freezer did not freeze the child"
            time.sleep(0.01)
        fd = pidfd.open_pidfd(child.pid)
        pidfd.send_signal(fd, signal.SIGKILL)
        result = pidfd.process_mrelease(fd)
        assert result.status is pidfd.MreleaseStatus.REAPED
        assert _rss_kib(child.pid) < 1 << 10  # the 64 MiB are gone while the task still exists
        assert not pidfd.wait_exited(fd, 1.0)  # frozen: the kill cannot complete
        (group / "freezer.state").write_text("THAWED")
        assert pidfd.wait_exited(fd, 10.0)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            (group / "freezer.state").write_text("THAWED")
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
        with contextlib.suppress(OSError):
            group.rmdir()


def test_unprivileged_trigger_window_must_be_a_multiple_of_two_seconds(
    scratch: ScratchGroup,
) -> None:
    """Without CAP_SYS_RESOURCE a 1 s window is refused with EINVAL on a cgroup's file too,
    and 2 s is accepted; a second trigger on the same fd is EBUSY."""
    if psi.may_use_fast_windows():
        pytest.skip("this process has CAP_SYS_RESOURCE: 1 s windows are legal for it")
    fd = os.open(scratch.group.directory / "memory.pressure", os.O_RDWR | os.O_NONBLOCK)
    try:
        with pytest.raises(OSError) as raised:
            os.write(fd, b"some 150000 1000000\0")
        assert raised.value.errno == errno.EINVAL
        os.write(fd, _TRIGGER)
        with pytest.raises(OSError) as busy:
            os.write(fd, _TRIGGER)
        assert busy.value.errno == errno.EBUSY
    finally:
        os.close(fd)


_ADJ_CHILD = """
import errno, sys
def write(value):
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write(str(value))
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]
start = int(open("/proc/self/oom_score_adj").read())
answers = [write(min(1000, start + 500)), write(start), write(-1000)]
print(*answers, open("/proc/self/oom_score_adj").read().strip())
"""


def test_oom_score_adj_goes_back_down_to_the_inherited_floor_without_cap_sys_resource() -> None:
    """Raising oom_score_adj and lowering it back to where it started needs no capability:
    the kernel only refuses values below the floor (oom_score_adj_min) that a privileged
    ancestor set and fork passed down. Whether -1000 itself is allowed depends on that floor."""
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _ADJ_CHILD],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    raised, lowered, to_min, final = result.stdout.split()
    assert (raised, lowered) == ("ok", "ok")
    assert to_min in ("ok", "EACCES")
    if to_min == "ok":  # this host: a floor of -1000 was passed down to us
        assert final == "-1000"


def _io_and_faults(pid: int) -> tuple[int, int]:
    """(read_bytes from /proc/PID/io, minflt + majflt from /proc/PID/stat)."""
    with open(f"/proc/{pid}/io", encoding="ascii") as handle:
        fields = dict(line.split(": ") for line in handle.read().splitlines())
    with open(f"/proc/{pid}/stat", "rb") as handle:
        words = handle.read().rsplit(b")", 1)[1].split()
    return int(fields["read_bytes"]), int(words[7]) + int(words[9])


@pytest.mark.pressure
def test_read_thrash_shows_in_read_bytes_not_in_page_faults(scratch: ScratchGroup) -> None:
    """A process re-reading a file bigger than its group's room through read(2) fetches from
    disk all the time, but faults almost never: fault rates cannot see it (the culprit gap in
    docs/design.md), /proc/PID/io's read_bytes can."""
    proc = scratch.spawn([sys.executable, "-m", "pressured.testing.culprits", "reader", "256"])
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"ready")
    time.sleep(0.5)  # past its start-up faults
    read_before, faults_before = _io_and_faults(proc.pid)
    time.sleep(2)
    read_after, faults_after = _io_and_faults(proc.pid)
    read_bytes = read_after - read_before
    fault_bytes = (faults_after - faults_before) * os.sysconf("SC_PAGE_SIZE")
    assert read_bytes >= 64 << 20, f"only {read_bytes} bytes read from disk in 2 s"
    assert read_bytes > 100 * fault_bytes, (read_bytes, fault_bytes)


def _stall_and_refaults(group: ScratchGroup, seconds: float) -> tuple[float, float]:
    """(stall us per refault, refaults per second) of ``group`` over ``seconds``."""

    def reading() -> tuple[int, int]:
        line = group.group.pressure_path().read_text().splitlines()[0]
        return int(line.split("total=")[1]), read_refaults(group.group, "/proc")

    (stall_before, refaults_before), started = reading(), time.monotonic()
    time.sleep(seconds)
    (stall_after, refaults_after), elapsed = reading(), time.monotonic() - started
    refaults = max(1, refaults_after - refaults_before)
    return (stall_after - stall_before) / refaults, refaults / elapsed


@pytest.mark.pressure
@pytest.mark.skipif(
    has_capability(CAP_SYS_RESOURCE), reason="readers starve unprivileged triggers only"
)
def test_a_2ms_reader_freezes_the_stall_total_but_not_the_refault_counter(
    scratch: ScratchGroup, thrash_file: str
) -> None:
    """Under real thrash a reader of memory.pressure every 2 ms stops the stall total from
    counting (next to no stall per refault) while memory.stat's refaults go on; without the
    reader the same thrash stalls far more per refault. The starvation check's frozen-total
    rule (pressured/starvation.py) sits between the two."""
    scratch.spawn_workload("thrash", thrash_file)
    time.sleep(2)
    with frequent_reader(scratch.group.pressure_path(), 0.002):
        time.sleep(1)
        frozen_us, frozen_rate = _stall_and_refaults(scratch, 6)
    time.sleep(1)
    counting_us, counting_rate = _stall_and_refaults(scratch, 6)
    threshold = FROZEN_STALL_US_PER_REFAULT
    assert frozen_rate >= 10_000 and counting_rate >= 10_000, (frozen_rate, counting_rate)
    assert frozen_us < threshold <= counting_us, (frozen_us, counting_us)
