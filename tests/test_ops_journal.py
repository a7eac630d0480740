"""Kill journal: durable JSON lines, 0600, torn last line tolerated; ``pressured log``."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pressured.cli import main
from pressured.events import KillRecord, KillResult, VictimKind
from pressured.kernel.pidfd import MreleaseResult, MreleaseStatus
from pressured.ops import Sink
from pressured.ops.journal import KillJournal, read_journal

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


def make_record(pid: int = 4242, **changes: Any) -> KillRecord:
    fields: dict[str, Any] = {
        "kind": VictimKind.PROCESS,
        "target": f"pid {pid} (hog)",
        "pid": pid,
        "comm": "hog",
        "cgroup": "/jobs",
        "policy": "oom_score",
        "reason": "highest oom_score",
        "scope": "system",
        "level": "some",
        "result": KillResult.KILLED,
        "signal": "SIGKILL",
        "rss_before_bytes": 300 << 20,
        "mrelease": MreleaseResult(MreleaseStatus.REAPED, 0, 1_000_000),
        "signal_to_reaped_ms": 12.25,
        "signal_to_exit_ms": 20.5,
        "wall_time": 1_700_000_000.0 + pid,
    }
    fields.update(changes)
    return KillRecord(**fields)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2, thread_name_prefix="test-io") as executor:
        yield executor


def test_journal_is_a_sink(tmp_path: Path, pool: ThreadPoolExecutor) -> None:
    """KillJournal satisfies the Sink protocol."""
    sink: Sink = KillJournal(tmp_path / "kills.jsonl", pool)
    assert isinstance(sink, Sink)


def test_append_writes_json_lines_in_order(
    run_async: Runner, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """Each record is one JSON line, in the order appended, in a 0600 file."""
    path = tmp_path / "state" / "kills.jsonl"

    async def scenario() -> None:
        journal = KillJournal(path, pool)
        await journal.start()
        for pid in range(100, 110):
            await journal.on_kill(make_record(pid))
        await journal.aclose()

    run_async(scenario())
    lines = path.read_bytes().splitlines()
    assert len(lines) == 10
    first = json.loads(lines[0])
    assert first["pid"] == 100
    assert first["mrelease"] == "reaped"
    assert first["result"] == "killed"
    assert [json.loads(line)["pid"] for line in lines] == list(range(100, 110))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_read_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    """A half-written last line is skipped; the complete records before it are returned."""
    path = tmp_path / "kills.jsonl"
    good = [json.dumps(make_record(pid).to_dict()) for pid in (1, 2, 3)]
    path.write_text("\n".join(good) + "\n" + good[0][: len(good[0]) // 2])
    records = read_journal(path, 2)
    assert [record["pid"] for record in records] == [2, 3]
    assert [record["pid"] for record in read_journal(path)] == [1, 2, 3]


def test_writer_starts_a_fresh_line_after_a_torn_one(
    run_async: Runner, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """Appending after a crash mid-write does not glue the new record to the torn line."""
    path = tmp_path / "kills.jsonl"
    path.write_text(json.dumps(make_record(1).to_dict()) + '\n{"kind": "proc')

    async def scenario() -> None:
        journal = KillJournal(path, pool)
        assert await journal.append(make_record(2))
        await journal.aclose()

    run_async(scenario())
    assert [record["pid"] for record in read_journal(path)] == [1, 2]


def test_read_last_n_across_blocks(tmp_path: Path) -> None:
    """The tail is read in blocks from the end: last_n is exact on a large journal."""
    path = tmp_path / "kills.jsonl"
    with path.open("w") as handle:
        for pid in range(3000):
            handle.write(json.dumps(make_record(pid).to_dict()) + "\n")
    assert [record["pid"] for record in read_journal(path, 5)] == [2995, 2996, 2997, 2998, 2999]
    assert len(read_journal(path, 2500)) == 2500
    assert read_journal(path, 0) == []


def test_write_failure_is_counted_not_raised(
    run_async: Runner, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """An unwritable journal logs and counts the failure; on_kill returns normally."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    errors: list[int] = []

    async def scenario() -> None:
        journal = KillJournal(blocker / "kills.jsonl", pool, on_error=lambda: errors.append(1))
        await journal.on_kill(make_record())
        assert journal.failures == 1
        await journal.aclose()

    run_async(scenario())
    assert errors == [1]


def test_start_raises_for_a_bad_path(
    run_async: Runner, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """start() surfaces an unusable path at start-up."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match=r"File exists|Not a directory"):
        run_async(KillJournal(blocker / "kills.jsonl", pool).start())


def test_reopen_follows_rotation(
    run_async: Runner, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """After the file is rotated away, reopen() writes to a new file at the path."""
    path = tmp_path / "kills.jsonl"

    async def scenario() -> None:
        journal = KillJournal(path, pool)
        await journal.append(make_record(1))
        path.rename(tmp_path / "kills.jsonl.1")
        await journal.reopen()
        await journal.append(make_record(2))
        await journal.aclose()

    run_async(scenario())
    assert [record["pid"] for record in read_journal(path)] == [2]


def write_journal(path: Path, records: list[KillRecord]) -> None:
    path.write_text("".join(json.dumps(record.to_dict()) + "\n" for record in records))
    os.chmod(path, 0o600)


def test_log_command_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`pressured log -n 2 --journal PATH` prints the last two kills as a table."""
    path = tmp_path / "kills.jsonl"
    write_journal(
        path,
        [
            make_record(1),
            make_record(2, reason="biggest RSS in /jobs"),
            make_record(
                3,
                result=KillResult.DRY_RUN,
                dry_run=True,
                mrelease=None,
                signal_to_reaped_ms=None,
            ),
        ],
    )
    assert main(["log", "-n", "2", "--journal", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["TIME", "TARGET", "POLICY"]
    assert "MRELEASE" in out[0]
    assert "SIG>REAPED ms" in out[0]
    assert len(out) == 3
    assert "pid 2 (hog)" in out[1]
    assert "biggest RSS in /jobs" in out[1]
    assert "reaped" in out[1]
    assert "12.2" in out[1]
    assert "300.0 MiB" in out[1]
    assert "dry_run" in out[2]
    assert "pid 1 " not in "\n".join(out)


def test_log_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`pressured log --json` prints one JSON object per kill."""
    path = tmp_path / "kills.jsonl"
    write_journal(path, [make_record(7), make_record(8)])
    assert main(["log", "--json", "--journal", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["pid"] for line in lines] == [7, 8]


def test_log_command_uses_config_journal_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --journal the path comes from the configuration file."""
    path = tmp_path / "kills.jsonl"
    write_journal(path, [make_record(9)])
    config = tmp_path / "pressured.toml"
    config.write_text(f'[journal]\npath = "{path}"\n')
    os.chmod(config, 0o600)
    assert main(["log", "-c", str(config)]) == 0
    assert "pid 9 (hog)" in capsys.readouterr().out


def test_log_command_without_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing journal is a clear message and exit 1."""
    assert main(["log", "--journal", str(tmp_path / "none.jsonl")]) == 1
    assert "no kill journal" in capsys.readouterr().err
