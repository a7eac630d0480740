"""The skim, native and pure Python: the same numbers, problems and vanished counts."""

from __future__ import annotations

import gc
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pressured.kernel import procfs
from pressured.kernel.procfs import SkimResult
from pressured.scan import skim
from pressured.scan.kept import KeptSkim

needs_native = pytest.mark.skipif(
    not skim.NATIVE_AVAILABLE, reason="the optional native skim extension is not built here"
)


def same(a: SkimResult, b: SkimResult) -> None:
    assert a.values == b.values
    assert a.vanished == b.vanished
    assert a.complete == b.complete
    assert sorted(p.pid for p in a.problems) == sorted(p.pid for p in b.problems)


def asleep(pid: int) -> bool:
    try:
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


@pytest.fixture
def sleepers() -> Iterator[list[int]]:
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(5)]
    # Compare numbers only once each sleeper sits in nanosleep: while its loader still maps
    # libraries its resident size changes between two reads.
    deadline = time.monotonic() + 10
    while not all(asleep(proc.pid) for proc in procs):
        assert time.monotonic() < deadline, "sleepers did not settle"
        time.sleep(0.01)
    yield [proc.pid for proc in procs]
    for proc in procs:
        proc.kill()
        proc.wait()


@needs_native
@pytest.mark.parametrize("name", ["statm", "oom_score"])
def test_native_and_python_skims_agree_on_real_processes(sleepers: list[int], name: str) -> None:
    """Real sleepers, PID 1, a kernel thread and a PID that does not exist."""
    pids = [*sleepers, 1, 2, 4_000_000]
    native = skim.skim_native("/proc", pids, name)
    python = procfs.skim_python("/proc", pids, name)
    same(native, python)
    assert native.vanished == 1 and set(native.values) == {*sleepers, 1, 2}


def fake_tree(root: Path) -> list[int]:
    files = {
        10: ("100 25 3 1 0 9 0\n", "700\n"),
        11: ("garbage\n", "12abc\n"),
        12: ("", ""),
        13: ("5\n", "-\n"),
        14: ("1 2 3 4 5 6 7", "0"),
    }
    for pid, (statm, oom_score) in files.items():
        (root / str(pid)).mkdir()
        (root / str(pid) / "statm").write_text(statm)
        (root / str(pid) / "oom_score").write_text(oom_score)
    (root / "15").mkdir()  # a process dir without the files: gone
    return [*files, 15, 16]


@needs_native
@pytest.mark.parametrize("name", ["statm", "oom_score"])
def test_native_and_python_skims_agree_on_malformed_files(tmp_path: Path, name: str) -> None:
    """Malformed files are problems the same way; missing ones count as vanished."""
    pids = fake_tree(tmp_path)
    native = skim.skim_native(str(tmp_path), pids, name)
    same(native, procfs.skim_python(str(tmp_path), pids, name))
    assert native.vanished == 2


@needs_native
def test_native_skim_honours_its_deadline_after_the_first_64(tmp_path: Path) -> None:
    """A deadline in the past: both read exactly the first 64, then stop, incomplete."""
    for pid in range(1000, 1200):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "statm").write_text("9 1 0 0 0 0 0\n")
    pids = list(range(1000, 1200))
    past = time.monotonic() - 1
    native = skim.skim_native(str(tmp_path), pids, "statm", past)
    same(native, procfs.skim_python(str(tmp_path), pids, "statm", past))
    assert not native.complete and len(native.values) == procfs.SKIM_MINIMUM


def test_without_the_extension_the_python_skim_answers(
    sleepers: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback path (no compiler at install time) gives the reference result."""
    monkeypatch.setattr(skim, "NATIVE_AVAILABLE", False)
    result = skim.skim("/proc", sleepers, "statm")
    assert set(result.values) == set(sleepers)
    assert all(value > 0 for value in result.values.values())


@needs_native
def test_native_stat_lines_are_not_left_to_the_garbage_collector(sleepers: list[int]) -> None:
    """Lines hold only numbers and a state letter: the native skim hands them over untracked
    (as CPython would after their first collection), so 10,000 of them per event, and the two
    readings kept, do not swell the collector's generations (tracked: full collections of 30 to
    66 ms at 10,000 processes)."""
    fresh = skim.skim("/proc", sleepers, "stat")
    kept = KeptSkim("stat")
    try:
        kept.skim("/proc", sleepers, "stat")
        again = kept.skim("/proc", sleepers, "stat")  # from the kept fds: pread_many
    finally:
        kept.close()
    for result in (fresh, again):
        assert len(result.lines) == len(sleepers)
        assert not any(gc.is_tracked(line) for line in result.lines.values())
        assert not gc.is_tracked(result.lines)
