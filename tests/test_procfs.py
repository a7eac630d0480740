"""The process scan, on the real /proc and on fake trees.

Real /proc: our own record, a child in a scratch cgroup, kernel threads, processes that exit
mid-scan, long command lines. Fake trees (``tmp_path``): malformed files become
``ScanResult.problems``, never exceptions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pressured.kernel import cgroupfs, procfs
from pressured.kernel.procfs import ProcessRecord, ScanResult, format_cmdline, scan_processes
from pressured.testing.scratch import ScratchGroup
from tests.conftest import requires_kernel

BIG_ARG_BYTES = 100_000
SLEEP_CODE = "import time; time.sleep(60)"


def by_pid(result: ScanResult) -> dict[int, ProcessRecord]:
    return {record.pid: record for record in result.processes}


@pytest.fixture
def sleeper_with_big_arg() -> Iterator[subprocess.Popen[bytes]]:
    """A sleeping child whose command line carries a 100 KB argument."""
    proc = subprocess.Popen([sys.executable, "-c", SLEEP_CODE, "x" * BIG_ARG_BYTES])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


# -- real /proc ------------------------------------------------------------------------------


def test_scan_finds_ourselves_with_uid_comm_and_cgroup() -> None:
    """Our own record has our uid, our comm and our v2 cgroup."""
    me = by_pid(scan_processes())[os.getpid()]
    assert me.uid == os.getuid()
    assert me.comm == Path("/proc/self/comm").read_text().strip()
    assert me.cgroup == cgroupfs.own_cgroup()
    assert me.ppid == os.getppid()
    assert not me.is_kernel_thread
    assert "pytest" in me.cmdline


def test_scan_of_real_proc_has_no_problems() -> None:
    """A full scan of the real /proc reports no malformed files and completes."""
    result = scan_processes()
    assert result.complete
    assert result.problems == ()
    assert len(result.processes) > 1


def test_kthreadd_is_flagged_as_kernel_thread() -> None:
    """PID 2 (kthreadd) is a kernel thread, with no command line."""
    if Path("/proc/2/comm").read_text().strip() != "kthreadd":
        pytest.skip("PID 2 is not kthreadd here (PID namespace without kernel threads)")
    record = by_pid(scan_processes(pids=[2]))[2]
    assert record.is_kernel_thread
    assert record.comm == "kthreadd"
    assert record.cmdline == ""


def test_pid_1_is_not_a_kernel_thread() -> None:
    """PID 1 is a user process (never confuse it with a kernel thread)."""
    assert not by_pid(scan_processes(pids=[1]))[1].is_kernel_thread


@requires_kernel
def test_child_in_scratch_group_has_that_cgroup(scratch: ScratchGroup) -> None:
    """A child moved into a scratch cgroup is reported with that group's v2 path."""
    proc = scratch.spawn_workload("sleep")
    record = by_pid(scan_processes(pids=[proc.pid]))[proc.pid]
    assert record.cgroup == scratch.path
    assert record.comm.startswith("python")


def test_reaped_process_in_pid_list_is_skipped_as_vanished() -> None:
    """A PID that was killed and reaped before the scan is counted as vanished, not a problem."""
    proc = subprocess.Popen(["sleep", "60"])
    proc.kill()
    proc.wait()
    result = scan_processes(pids=[proc.pid, os.getpid()])
    assert proc.pid not in by_pid(result)
    assert os.getpid() in by_pid(result)
    assert result.vanished == 1
    assert result.problems == ()


def test_processes_exiting_during_scans_are_skipped() -> None:
    """Scans racing with many short-lived processes never raise nor report problems."""
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            procs = [subprocess.Popen(["true"]) for _ in range(8)]
            for proc in procs:
                proc.wait()

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 3.0
        results: list[ScanResult] = []
        while time.monotonic() < deadline and (
            len(results) < 5 or not any(result.vanished for result in results)
        ):
            # Listing first and reading later widens the window for exits between the two.
            pids = procfs.list_pids()
            time.sleep(0.005)
            results.append(scan_processes(pids=pids))
    finally:
        stop.set()
        worker.join(10)
    assert all(result.problems == () for result in results)
    assert sum(result.vanished for result in results) > 0, "no exit raced any scan"


def test_long_cmdline_is_truncated_and_bounded(
    sleeper_with_big_arg: subprocess.Popen[bytes],
) -> None:
    """A 100 KB argument is cut at the scan's limit and flagged as truncated."""
    pid = sleeper_with_big_arg.pid
    record = by_pid(scan_processes(pids=[pid], cmdline_limit=4096))[pid]
    assert record.cmdline_truncated
    assert len(record.cmdline) <= 4096
    assert record.cmdline.startswith(sys.executable)


def test_long_cmdline_within_limit_is_whole(
    sleeper_with_big_arg: subprocess.Popen[bytes],
) -> None:
    """With a limit above its length, the 100 KB command line is read whole, not flagged."""
    pid = sleeper_with_big_arg.pid
    record = by_pid(scan_processes(pids=[pid], cmdline_limit=200_000))[pid]
    assert not record.cmdline_truncated
    assert record.cmdline.endswith(" " + "x" * BIG_ARG_BYTES)


def test_cmdline_of_exactly_the_limit_is_not_truncated() -> None:
    """The kernel's trailing NUL does not count: limit bytes of arguments fit in limit."""
    assert format_cmdline(b"ab\0cd\0", 5) == ("ab cd", False)
    assert format_cmdline(b"ab\0cde", 5) == ("ab cd", True)


def test_cmdline_control_characters_are_replaced() -> None:
    """Escape sequences in arguments cannot reach a terminal or a log line."""
    text, _ = format_cmdline(b"evil\x1b[2J\0arg\n\0", 100)
    assert text == "evil?[2J arg?"


def test_deadline_in_the_past_marks_scan_incomplete() -> None:
    """A deadline already passed stops the scan and says so."""
    result = scan_processes(deadline=time.monotonic() - 1)
    assert not result.complete
    assert result.processes == ()


def test_meminfo_is_in_bytes() -> None:
    """read_meminfo multiplies kB figures out to bytes."""
    meminfo = procfs.read_meminfo()
    assert meminfo["MemTotal"] % 1024 == 0
    assert meminfo["MemTotal"] > meminfo["MemFree"] > 0


# -- fake /proc trees -----------------------------------------------------------------------------

STAT_TAIL = " ".join(["0"] * 30)


def fake_stat(pid: int, comm: str = "worker", flags: int = 0x400100, rss_pages: int = 256) -> str:
    # Fields 1..24 as the kernel writes them, then filler up to the usual 52.
    fields_3_to_24 = (
        f"S 1 {pid} {pid} 0 -1 {flags} 10 0 0 0 5 6 0 0 20 0 1 0 12345 1000000 {rss_pages}"
    )
    return f"{pid} ({comm}) {fields_3_to_24} {STAT_TAIL}\n"


def fake_status(uid: int = 1000, swap_kib: int = 8) -> str:
    return f"Name:\tworker\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nVmSwap:\t{swap_kib} kB\n"


def make_process(
    root: Path,
    pid: int,
    *,
    stat: str | None = None,
    status: str | None = None,
    oom_score: str = "100\n",
    cmdline: bytes = b"/usr/bin/worker\0--fast\0",
) -> None:
    base = root / str(pid)
    base.mkdir()
    (base / "stat").write_text(stat if stat is not None else fake_stat(pid))
    (base / "status").write_text(status if status is not None else fake_status())
    (base / "cmdline").write_bytes(cmdline)
    (base / "oom_score").write_text(oom_score)
    (base / "oom_score_adj").write_text("0\n")
    (base / "cgroup").write_text("0::/jobs/a\n")


def test_fake_tree_good_process_is_parsed(tmp_path: Path) -> None:
    """A well-formed fake process becomes a full record."""
    make_process(tmp_path, 100, stat=fake_stat(100, comm="we (ird) name"))
    record = by_pid(scan_processes(str(tmp_path)))[100]
    assert record.comm == "we (ird) name"
    assert record.start_time == 12345
    assert record.rss_bytes == 256 * procfs.PAGE_SIZE
    assert record.swap_bytes == 8 * 1024
    assert (record.uid, record.oom_score, record.cgroup) == (1000, 100, "/jobs/a")
    assert record.cmdline == "/usr/bin/worker --fast"


def test_fake_tree_kernel_thread_flag(tmp_path: Path) -> None:
    """PF_KTHREAD in the stat flags marks a kernel thread."""
    make_process(tmp_path, 2, stat=fake_stat(2, comm="kthreadd", flags=procfs.PF_KTHREAD))
    assert by_pid(scan_processes(str(tmp_path)))[2].is_kernel_thread


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"stat": "101 worker S 1\n"}, "comm"),
        ({"stat": "101 (worker) S 1 2 3\n"}, "fields"),
        ({"stat": fake_stat(101).replace(" 12345 ", " soon ")}, "non-numeric"),
        ({"status": "Name:\tworker\n"}, "no Uid line"),
        ({"status": "Uid:\tnobody\n"}, "malformed Uid"),
        ({"status": fake_status() + "VmSwap:\tlots kB\n"}, "malformed VmSwap"),
        ({"oom_score": "high\n"}, "not an integer"),
    ],
)
def test_fake_tree_malformed_file_is_a_problem(
    tmp_path: Path, files: dict[str, str], problem: str
) -> None:
    """A malformed file is reported in problems for its PID; the good process is still read."""
    make_process(tmp_path, 100)
    make_process(
        tmp_path,
        101,
        stat=files.get("stat"),
        status=files.get("status"),
        oom_score=files.get("oom_score", "100\n"),
    )
    result = scan_processes(str(tmp_path))
    assert set(by_pid(result)) == {100}
    assert [p.pid for p in result.problems] == [101]
    assert problem in result.problems[0].problem


def test_fake_tree_missing_files_count_as_vanished(tmp_path: Path) -> None:
    """A PID directory without its files (the process just went) is vanished, not a problem."""
    (tmp_path / "103").mkdir()
    result = scan_processes(str(tmp_path))
    assert (result.processes, result.problems, result.vanished) == ((), (), 1)


def test_fake_tree_non_pid_entries_are_ignored(tmp_path: Path) -> None:
    """Entries such as 'self' or 'meminfo' are not taken for processes."""
    (tmp_path / "self").mkdir()
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\n")
    make_process(tmp_path, 100)
    assert set(by_pid(scan_processes(str(tmp_path)))) == {100}
