"""Operations around a real daemon: /metrics, /status and /healthz after a real kill, the
journal, a hanging pre-kill hook that cannot delay the kill, and sd_notify."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from pressured.ops.journal import read_journal
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup

pytestmark = [pytest.mark.kernel, pytest.mark.pressure]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_status_health_and_journal_after_a_real_kill(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path
) -> None:
    """A real kill shows in /metrics with its labels, in /status and in the journal."""
    journal = tmp_path / "kills.jsonl"
    config = write_config(
        tmp_path / "p.toml",
        scope_config(scratch.path, scratch.memcg_path) + f'\n[journal]\npath = "{journal}"\n',
    )
    with Daemon(config) as daemon:
        url = daemon.wait_for("ops.listening", 20)["url"]
        daemon.wait_for("controller.ready", 20)
        assert get(f"{url}/healthz") == (200, "ok\n")
        thrasher = scratch.spawn_workload("thrash", thrash_file)
        daemon.wait_for("victim.killed", 40)
        status, text = get(f"{url}/metrics")
        assert status == 200
        assert (
            f'pressured_kills_total{{kill_reason="stall",kind="process",policy="oom_score",'
            f'result="killed",'
            f'scope="{scratch.path}"}} 1.0' in text
        )
        assert "pressured_process_mrelease_total{" in text
        assert f'pressured_triggers_armed{{scope="{scratch.path}"}} 1.0' in text
        assert "pressured_signal_to_exit_seconds_bucket" in text
        status, body = get(f"{url}/status")
        assert status == 200
        report = json.loads(body)
        assert report["last_kills"][-1]["pid"] == thrasher.pid
        assert report["scopes"][0]["triggers"][0]["window_ms"] in (2000.0, 1000.0)
        assert get(f"{url}/healthz") == (200, "ok\n")
        entries = read_journal(journal)
        assert entries[-1]["pid"] == thrasher.pid and entries[-1]["result"] == "killed"
        assert daemon.stop() == 0


def test_hanging_pre_kill_hook_is_cut_off_and_the_kill_happens(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path
) -> None:
    """A pre-kill hook that sleeps 60 s is cut off at its 300 ms limit; the kill goes on."""
    config = write_config(
        tmp_path / "p.toml",
        scope_config(scratch.path, scratch.memcg_path)
        + '\n[[hooks.pre_kill]]\ncommand = ["/bin/sleep", "60"]\ntimeout_ms = 300\n',
    )
    with Daemon(config) as daemon:
        daemon.wait_for("controller.ready", 20)
        thrasher = scratch.spawn_workload("thrash", thrash_file)
        killed = daemon.wait_for("victim.killed", 40)
        assert killed["pid"] == thrasher.pid
        # The hook's limit is the only wait between decision and signal.
        assert 250 <= killed["decision_to_signal_ms"] < 5000
        assert daemon.events("hook.timeout")
        assert daemon.stop() == 0


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path) -> None:
    """With NOTIFY_SOCKET set the daemon says READY=1, pings WATCHDOG=1, then STOPPING=1."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    env = {
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": "400000",
        "PRESSURED_METRICS__PORT": "0",
        "PRESSURED_DAEMON__MLOCKALL": "false",
    }
    messages: list[str] = []
    try:
        # Dry-run: system-wide scope, and this test must kill nothing on the machine.
        with Daemon(None, "--dry-run", env=env) as daemon:
            deadline = time.monotonic() + 15
            while not any("WATCHDOG=1" in m for m in messages) and time.monotonic() < deadline:
                messages.append(sock.recv(4096).decode())
            assert any("READY=1" in m for m in messages)
            assert any("WATCHDOG=1" in m for m in messages)
            assert daemon.stop() == 0
            sock.settimeout(2)
            while not any("STOPPING=1" in m for m in messages):
                messages.append(sock.recv(4096).decode())
    finally:
        sock.close()
        if os.path.exists(path):
            os.unlink(path)
