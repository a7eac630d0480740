"""The 2-minute soaks (benchmarks/soak.py) in CI: repeated real pressure episodes against one
daemon, without and with faults; no wrong victim, every episode relieved, no daemon restart,
no fd leak."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.pressure, pytest.mark.slow]

FAULTS_HERE = "regroup,threaded,stuck,biggroup,sighup,idle-http"
"""Every fault the soak knows (benchmarks/soak.py FAULTS)."""


def run_soak(
    tmp_path: Path, *extra: str
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--minutes", "2", "--json", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.exists(), done.stderr[-2000:]
    return json.loads(out.read_text()), done


def assert_sound(report: dict[str, Any]) -> None:
    assert report["wrong_victims"] == 0, report
    assert report["unrelieved"] == 0, report
    assert report["daemon_restarts"] == 0, report
    assert report["bystanders_alive"] is True
    assert report["daemon_exit_code"] == 0
    assert report["daemon_end"]["fds"] <= report["daemon_start"]["fds"] + 2
    assert report["daemon_end"]["vmrss_kib"] < report["daemon_start"]["vmrss_kib"] + 16 * 1024


def test_two_minute_soak(tmp_path: Path) -> None:
    """Every episode relieved, zero wrong victims, bystanders alive, fds flat."""
    report, done = run_soak(tmp_path)
    assert report["episodes"] >= 10
    assert_sound(report)
    assert done.returncode == 0


def test_two_minute_fault_soak(tmp_path: Path) -> None:
    """Faults at random between episodes (watched group removed and made again, SIGHUP
    storms): every fault's check holds, and the same soundness as without faults."""
    report, done = run_soak(tmp_path, "--faults", FAULTS_HERE)
    assert report["episodes"] >= 6
    assert_sound(report)
    results = report["fault_results"]
    assert sum(r["injected"] for r in results.values()) >= 2, results
    assert all(not r["failures"] for r in results.values()), results
    assert done.returncode == 0
