"""Process history between snapshots, and the short second sample when there is none."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pressured.history import ProcessHistory
from pressured.kernel import procfs
from pressured.snapshot import Snapshot
from pressured.testing import make_process, make_snapshot


def at(snapshot: Snapshot, seconds: float) -> Snapshot:
    return dataclasses.replace(snapshot, taken_monotonic_ns=int(seconds * 1e9))


def test_second_snapshot_gets_the_firsts_samples_as_previous() -> None:
    """History hands each snapshot the one before (when 0.1 .. 5 s old)."""
    history = ProcessHistory(resample_s=0)
    first = at(make_snapshot([make_process(10, rss_mib=10, minflt=100)]), 100.0)
    history.complete(first)
    second = history.complete(at(make_snapshot([make_process(10, rss_mib=30)]), 101.0))
    sample = second.previous[(10, 1000)]
    assert sample.rss_bytes == 10 * 2**20 and sample.minflt == 100
    assert sample.monotonic_ns == int(100.0 * 1e9)


def test_stale_history_is_not_used() -> None:
    """A snapshot a minute old averages too much quiet time: it is not handed on."""
    history = ProcessHistory(resample_s=0)
    history.complete(at(make_snapshot([make_process(10)]), 100.0))
    later = history.complete(at(make_snapshot([make_process(10)]), 160.0))
    assert later.previous == {}


def test_history_is_bounded_to_the_largest_processes() -> None:
    """At most max_entries samples per generation, the largest kept."""
    history = ProcessHistory(resample_s=0, max_entries=2)
    records = [make_process(10 + i, rss_mib=i + 1) for i in range(5)]
    history.complete(at(make_snapshot(records), 1.0))
    kept = history.generations[-1].samples
    assert {pid for pid, _ in kept} == {13, 14}


@pytest.fixture
def allocator() -> Iterator[subprocess.Popen[bytes]]:
    """A real process that allocates 4 MiB every 20 ms after it says ready."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nheld = []\nprint('ready', flush=True)\nsys.stdin.readline()\n"
            "while len(held) < 200:\n"
            "    held.append(bytearray(4 << 20))\n"
            "    time.sleep(0.02)\n"
            "time.sleep(60)\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()


def test_first_event_without_history_takes_a_second_sample(
    allocator: subprocess.Popen[bytes],
) -> None:
    """No history: a 200 ms second read of /proc/PID/stat shows the real process growing."""
    assert allocator.stdin is not None
    record = procfs.read_process(allocator.pid)
    snapshot = dataclasses.replace(make_snapshot([record]), taken_monotonic_ns=time.monotonic_ns())
    allocator.stdin.write(b"go\n")
    allocator.stdin.flush()
    history = ProcessHistory(resample_s=0.2)
    completed = history.complete(snapshot)
    assert history.resamples == 1
    before = completed.previous[record.identity]
    after = completed.process(allocator.pid)
    assert after is not None
    assert after.rss_bytes > before.rss_bytes
    assert after.minflt > before.minflt
