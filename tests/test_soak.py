"""The 2-minute soak (benchmarks/soak.py) in CI: repeated real pressure episodes against one
daemon; no wrong victim, every episode relieved, no fd leak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.pressure, pytest.mark.slow]


def test_two_minute_soak(tmp_path: Path) -> None:
    """Every episode relieved, zero wrong victims, bystanders alive, fds flat."""
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--minutes", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.exists(), done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["episodes"] >= 10
    assert report["wrong_victims"] == 0, report
    assert report["unrelieved"] == 0, report
    assert report["bystanders_alive"] is True
    assert report["daemon_exit_code"] == 0
    assert report["daemon_end"]["fds"] <= report["daemon_start"]["fds"] + 2
    assert report["daemon_end"]["vmrss_kib"] < report["daemon_start"]["vmrss_kib"] + 16 * 1024
    assert done.returncode == 0
