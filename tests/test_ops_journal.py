"""Kill journal: durable JSON lines, 0600, torn last line tolerated; ``pressured log``."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pressured.cli import main
from pressured.events import KillRecord, KillResult, VictimKind
from pressured.kernel.pidfd import MreleaseResult, MreleaseStatus
from pressured.ops import Sink
from pressured.ops.journal import KillJournal, read_journal, read_journal_async

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


# -- tampering: nobody else chooses what root writes into ----------------------------------------

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def sticky_dir(tmp_path: Path) -> Path:
    """A /tmp-like directory: anyone may create entries, only owners remove them."""
    folder = tmp_path / "sticky"
    folder.mkdir()
    folder.chmod(0o1777)
    return folder


def test_journal_in_a_directory_others_can_write_is_refused(
    run_async: Runner, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """start() refuses a journal directory others can write (they could swap the file)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match=f"{shared} is writable by group or others"):
        run_async(KillJournal(shared / "kills.jsonl", pool).start())
    assert not (shared / "kills.jsonl").exists()


@needs_root
def test_link_planted_at_the_journal_path_is_refused_at_reopen(
    run_async: Runner, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """After rotation another user plants a link at the path: reopen refuses to follow it."""
    folder = sticky_dir(tmp_path)
    path = folder / "kills.jsonl"
    victim = tmp_path / "precious"
    victim.write_text("root's data\n")

    async def scenario() -> None:
        journal = KillJournal(path, pool)
        await journal.append(make_record(1))
        path.rename(folder / "kills.jsonl.1")
        path.symlink_to(victim)
        os.lchown(path, NOBODY, NOBODY)
        await journal.reopen()
        assert await journal.append(make_record(2)) is False
        await journal.aclose()
        with pytest.raises(PermissionError, match="is a symbolic link"):
            await journal.start()

    run_async(scenario())
    assert victim.read_text() == "root's data\n"


@needs_root
def test_file_planted_at_the_journal_path_is_refused_at_reopen(
    run_async: Runner, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """A file another user created at the path in a sticky directory is not written into."""
    folder = sticky_dir(tmp_path)
    path = folder / "kills.jsonl"

    async def scenario() -> None:
        journal = KillJournal(path, pool)
        await journal.append(make_record(1))
        path.rename(folder / "kills.jsonl.1")
        path.write_text("")
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o600)
        await journal.reopen()
        assert await journal.append(make_record(2)) is False
        await journal.aclose()
        with pytest.raises(PermissionError, match=f"owned by uid {NOBODY}"):
            await journal.start()

    run_async(scenario())
    assert path.read_text() == ""


@needs_root
def test_journal_directory_linked_by_another_user_is_refused(
    run_async: Runner, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    """A directory link planted by another user in a sticky directory is not followed."""
    folder = sticky_dir(tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    (folder / "pressured").symlink_to(theirs)
    os.lchown(folder / "pressured", NOBODY, NOBODY)
    with pytest.raises(PermissionError, match=f"owned by uid {NOBODY}"):
        run_async(KillJournal(folder / "pressured" / "kills.jsonl", pool).start())
    assert list(theirs.iterdir()) == []


def test_journal_writes_create_no_thread_but_the_owned_one(
    run_async: Runner, tmp_path: Path
) -> None:
    """Opening, appending (write + fsync), reopening and reading back through aiofiles run on
    the one owned "pressured-ops" thread: no default executor, no other new thread."""
    before = {thread.ident for thread in threading.enumerate()}
    path = tmp_path / "kills.jsonl"

    with ThreadPoolExecutor(1, thread_name_prefix="pressured-ops") as io:

        async def scenario() -> list[str]:
            journal = KillJournal(path, io)
            await journal.start()
            for pid in range(5):
                assert await journal.append(make_record(pid))
            await journal.reopen()
            assert await journal.append(make_record(5))
            records = await read_journal_async(path, 3, io)
            assert [record["pid"] for record in records] == [3, 4, 5]
            await journal.aclose()
            return [t.name for t in threading.enumerate() if t.ident not in before]

        new_threads = run_async(scenario())
    assert new_threads == ["pressured-ops_0"]


def test_log_command_does_not_follow_a_link_at_the_journal_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pressured log` opens the journal O_NOFOLLOW: a link there is an error, not followed."""
    real = tmp_path / "elsewhere.jsonl"
    write_journal(real, [make_record(1)])
    link = tmp_path / "kills.jsonl"
    link.symlink_to(real)
    assert main(["log", "--journal", str(link), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Too many levels of symbolic links" in captured.err
