"""The library examples run as documented, against real pressure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pressured.testing.scratch import ScratchGroup

pytestmark = [pytest.mark.kernel, pytest.mark.pressure]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_worker_pool_kills_its_largest_worker_under_pressure() -> None:
    """examples/worker_pool.py: pressure in its own cgroup -> a worker killed and reaped."""
    data = Path(f"/var/tmp/pressured-test-pool-{os.getpid()}.bin")
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "worker_pool.py"),
                "--workers",
                "3",
                "--limit-mib",
                "48",
                "--duration",
                "45",
                "--stop-after-kills",
                "1",
                "--data-file",
                str(data),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        data.unlink(missing_ok=True)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    killed = [line for line in lines if line["event"] == "worker.killed"]
    assert len(killed) == 1
    assert killed[0]["result"] == "killed"
    assert killed[0]["mrelease"] in ("reaped", "gone")
    assert killed[0]["target"] == 2
    stop = lines[-1]
    assert stop["event"] == "pool.stop" and stop["kills"] == 1


def test_watch_example_prints_an_event(scratch: ScratchGroup, thrash_file: str) -> None:
    """examples/watch.py prints the armed trigger and a real event, then exits (--count 1)."""
    scratch.set_limit(32 << 20)
    watcher = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "watch.py"),
            "--cgroup",
            scratch.path,
            "--count",
            "1",
            "--uvloop",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        first = watcher.stdout.readline()
        assert first.startswith("watching ") and "memory some 100ms/2000ms" in first
        scratch.spawn_workload("thrash", thrash_file)
        out, _ = watcher.communicate(timeout=40)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0
    assert f"{scratch.path}: some pressure" in out
