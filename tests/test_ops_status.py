"""``pressured status`` against a live OpsServer, and with no daemon."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from pressured.cli import main
from pressured.cli.status import default_url, format_status
from pressured.config import MetricsSettings
from pressured.ops.http import OpsServer

Runner = Callable[[Coroutine[Any, Any, Any]], Any]

STATUS: Mapping[str, Any] = {
    "version": "0.1.0",
    "pid": 321,
    "dry_run": False,
    "healthy": True,
    "scopes": [
        {
            "name": "system",
            "triggers": [
                {"level": "some", "kind": "some", "threshold_ms": 140.0, "window_ms": 2000.0},
            ],
        }
    ],
    "last_kills": [
        {
            "wall_time": 1_700_000_000.0,
            "target": "pid 9 (hog)",
            "policy": "largest",
            "reason": "largest RSS",
            "result": "killed",
            "mrelease": "reaped",
            "signal_to_reaped_ms": 4.5,
            "signal_to_exit_ms": 9.0,
            "rss_before_bytes": 1 << 30,
        }
    ],
}


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """Keep the server's log lines out of the captured stdout the tests read."""
    with structlog.testing.capture_logs():
        yield


def test_status_prints_readably(run_async: Runner, capsys: pytest.CaptureFixture[str]) -> None:
    """`pressured status --url` prints scalars, the trigger table and the kill table."""

    async def scenario() -> int:
        async with OpsServer("127.0.0.1", 0, status=lambda: STATUS) as server:
            return await asyncio.to_thread(main, ["status", "--url", server.url])

    assert run_async(scenario()) == 0
    out = capsys.readouterr().out
    assert "version" in out
    assert "0.1.0" in out
    assert "dry_run  no" in out
    assert "- name  system" in out
    assert "THRESHOLD_MS" in out
    assert "2000" in out
    assert "pid 9 (hog)" in out
    assert "1.0 GiB" in out


def test_status_json(run_async: Runner, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` prints the document as it came."""

    async def scenario() -> int:
        async with OpsServer("127.0.0.1", 0, status=lambda: STATUS) as server:
            return await asyncio.to_thread(main, ["status", "--json", "--url", server.url])

    assert run_async(scenario()) == 0
    assert json.loads(capsys.readouterr().out) == STATUS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_daemon_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With nothing listening at the configured port: a clear message and exit 1."""
    config = tmp_path / "pressured.toml"
    config.write_text(f"[metrics]\nport = {free_port()}\n")
    os.chmod(config, 0o600)
    assert main(["status", "-c", str(config), "--timeout", "1"]) == 1
    assert "no daemon answered" in capsys.readouterr().err


def test_default_url_from_settings() -> None:
    """Wildcard binds are reached on loopback; IPv6 hosts are bracketed."""
    assert default_url(MetricsSettings()) == "http://127.0.0.1:19464"
    wildcard = MetricsSettings(host="0.0.0.0", port=1)  # noqa: S104 -- the case under test
    assert default_url(wildcard) == "http://127.0.0.1:1"
    assert default_url(MetricsSettings(host="::", port=2)) == "http://[::1]:2"


def test_format_unknown_shapes() -> None:
    """Unexpected documents still render (nested mappings, lists of scalars, empty lists)."""
    text = format_status({"a": {"b": [1, 2], "c": []}, "d": None})
    assert "d  -" in text
    assert "- 1" in text
    assert "(none)" in text
