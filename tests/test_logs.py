"""Logging: stdlib records in the same format, journald priorities, terminal-safe values.

The journald tests give a real child process a real AF_UNIX stream socket as stdout and set
``JOURNAL_STREAM`` to that socket's device and inode, which is exactly how systemd connects a
service to journald (no journald runs on the test hosts, so the socket's reader is the test).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from pressured.events import EventSource, PressureEvent
from pressured.kernel import psi
from pressured.logs import configure_logging, journal_stream_matches, terminal_safe
from pressured.reap import kill_and_reap_cgroup
from pressured.testing.daemon import scope_config, write_config
from pressured.testing.scratch import ScratchGroup
from tests.conftest import new_loop

REPO = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 30.0


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put structlog and the root logger back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_asyncio_callback_error_is_a_json_line(loop_name: str) -> None:
    """asyncio's own 'Exception in callback' error comes out as a JSON line with its traceback,
    on both loops, instead of a bare multi-line traceback in a JSON stream."""
    out = io.StringIO()
    configure_logging("json", "info", stream=out)

    def explode() -> None:
        raise RuntimeError("callback failed")

    loop = new_loop(loop_name)
    try:
        loop.call_soon(explode)
        loop.call_soon(loop.stop)
        loop.run_forever()
    finally:
        loop.close()
    lines = json_lines(out.getvalue())
    errors = [line for line in lines if line.get("logger") == "asyncio"]
    assert len(errors) == 1, out.getvalue()
    assert errors[0]["level"] == "error"
    assert "Exception in callback" in errors[0]["event"]
    assert "RuntimeError: callback failed" in errors[0]["exception"]
    assert "timestamp" in errors[0]


def test_library_logs_follow_the_configured_level() -> None:
    """A library's stdlib logger is filtered by the daemon's level and rendered like ours."""
    out = io.StringIO()
    configure_logging("json", "warning", stream=out)
    library = logging.getLogger("some.library")
    library.info("chatter")
    library.warning("disk %s is slow", "sda")
    structlog.get_logger("pressured.test").info("ours.quiet")
    structlog.get_logger("pressured.test").warning("ours.loud", scope="/jobs")
    lines = json_lines(out.getvalue())
    assert [line["event"] for line in lines] == ["disk sda is slow", "ours.loud"]
    assert lines[0]["logger"] == "some.library"
    assert {line["level"] for line in lines} == {"warning"}


def test_reconfiguring_does_not_duplicate_stdlib_lines() -> None:
    """configure_logging twice (CLI, then reload) still gives each stdlib record one line."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", stream=first)
    configure_logging("json", "info", stream=second)
    logging.getLogger("asyncio").error("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second.getvalue())] == ["once"]


# -- journald ------------------------------------------------------------------------------------

_JOURNAL_CHILD = """
import asyncio, logging, sys
import structlog
from pressured.logs import configure_logging
configure_logging("auto", "debug")
log = structlog.get_logger("pressured.child")
log.debug("child.debug")
log.info("child.info")
log.warning("child.warning")
log.error("child.error")
log.critical("child.critical")
def explode():
    raise RuntimeError("boom")
loop = asyncio.new_event_loop()
loop.call_soon(explode)
loop.call_soon(loop.stop)
loop.run_forever()
sys.stdout.flush()
"""


def _run_child_with_stdout(stdout_fd: int, journal_stream: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JOURNAL_STREAM": journal_stream}
    subprocess.run(
        [sys.executable, "-c", _JOURNAL_CHILD],
        stdout=stdout_fd,
        stderr=subprocess.DEVNULL,
        env=env,
        timeout=CHILD_TIMEOUT_S,
        check=True,
    )


def _read_all(sock: socket.socket) -> str:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_journal_stream_lines_carry_syslog_priorities() -> None:
    """With stdout on the journal stream, every line starts with its sd-daemon priority, so
    ``journalctl -p err`` finds errors, asyncio's included (traceback lines too)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        stat = os.fstat(theirs.fileno())
        _run_child_with_stdout(theirs.fileno(), f"{stat.st_dev}:{stat.st_ino}")
        theirs.close()
        text = _read_all(ours)
    lines = text.splitlines()
    assert lines, "the child wrote nothing"
    priorities: dict[str, int] = {}
    for line in lines:
        assert line[:1] == "<" and line[2:3] == ">", line
        body = line[3:]
        if body.startswith("{"):
            priorities[json.loads(body)["event"].split(" ")[0]] = int(line[1])
    assert priorities["child.debug"] == 7
    assert priorities["child.info"] == 6
    assert priorities["child.warning"] == 4
    assert priorities["child.error"] == 3
    assert priorities["child.critical"] == 2
    assert priorities["Exception"] == 3  # asyncio's "Exception in callback ..."


def test_inherited_journal_stream_variable_adds_no_prefix() -> None:
    """JOURNAL_STREAM naming another socket (inherited, output redirected) adds no prefix."""
    journal, _other_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with journal, _other_end, ours, theirs:
        stat = os.fstat(journal.fileno())
        _run_child_with_stdout(theirs.fileno(), f"{stat.st_dev}:{stat.st_ino}")
        theirs.close()
        text = _read_all(ours)
    lines = text.splitlines()
    assert lines
    assert all(line.startswith("{") for line in lines), lines[:3]


def test_journal_stream_check_compares_device_and_inode(tmp_path: Path) -> None:
    """Only the stream whose st_dev:st_ino JOURNAL_STREAM names matches; garbage never does."""
    with open(tmp_path / "out", "w") as stream:
        stat = os.fstat(stream.fileno())
        assert journal_stream_matches(stream, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
        assert not journal_stream_matches(
            stream, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"}
        )
        assert not journal_stream_matches(stream, {"JOURNAL_STREAM": "garbage"})
        assert not journal_stream_matches(stream, {})
    assert not journal_stream_matches(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


# -- one name for the PSI level ------------------------------------------------------------------


def test_pressure_event_log_line_names_the_psi_level_pressure_level() -> None:
    """A log call passing level= and an event's to_dict() both say pressure_level; the log
    line's own severity keeps 'level'."""
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    event = PressureEvent(scope="/jobs", level="full", source=EventSource.PSI)
    structlog.get_logger("t").warning("pressure.event", level=event.level)
    structlog.get_logger("t").warning("pressure.dict", **event.to_dict())
    first, second = json_lines(out.getvalue())
    assert first["pressure_level"] == "full" and first["level"] == "warning"
    assert second["pressure_level"] == "full" and second["level"] == "warning"


# -- terminal safety -----------------------------------------------------------------------------


def test_terminal_safe_escapes_control_and_bidi_characters() -> None:
    """ESC, newline, carriage return and bidi overrides become visible escapes."""
    assert terminal_safe("/jobs/a\x1b[2Jb\r\nc\u202e") == "/jobs/a\\x1b[2Jb\\r\\nc\\u202e"
    assert terminal_safe("/plain/path") == "/plain/path"
    assert terminal_safe("back\\slash") == "back\\\\slash"
    assert terminal_safe("tb\n  line\x07", keep_newlines=True) == "tb\n  line\\x07"


def _read_pty(master: int) -> bytes:
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.kernel
def test_cgroup_name_and_policy_reason_reach_a_terminal_escaped(scratch: ScratchGroup) -> None:
    """A real cgroup named with an escape sequence (the kernel accepts ESC, not newline), killed
    as a group, and a policy reason with a newline and a bidi override are written to a real
    terminal escaped: no ESC byte, no extra line, no bidi override reaches it."""
    name = "evil\x1b]0;pwned\x07\x1b[2Jname\u202e"
    group = scratch.child(name)
    assert [child.path for child in scratch.group.children()] == [group.path]
    sleeper = scratch.spawn(["/bin/sleep", "60"], group=group, stdout=subprocess.DEVNULL)
    record = asyncio.run(kill_and_reap_cgroup(group.path, memcg_v1_path=group.memcg_v1_path))
    assert sleeper.wait(timeout=10) == -9
    assert record.cgroup == group.path  # the real name, unescaped, is what the record holds

    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as terminal:
            assert terminal.isatty()
            configure_logging("auto", "info", stream=terminal)
            fields = record.to_dict()
            fields["reason"] = "largest group\nvictim.killed fake=1 \u202eexe.txt"
            structlog.get_logger("pressured.controller").warning("victim.killed", **fields)
            terminal.flush()
        output = _read_pty(master)
    finally:
        os.close(master)
        os.close(slave)
    text = output.decode()
    assert "victim.killed" in text
    # Colours are the renderer's own SGR sequences; strip them, then nothing else may remain.
    for colour in _sgr_sequences(text):
        text = text.replace(colour, "")
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert text.count("\n") == 1, text  # one line: the reason's newline did not start another
    assert "evil\\x1b]0;pwned\\x07\\x1b[2Jname\\u202e" in text
    assert "largest group\\nvictim.killed fake=1 \\u202eexe.txt" in text


def _sgr_sequences(text: str) -> set[str]:
    """The colour sequences ``ESC [ <digits;> m`` the console renderer itself writes."""
    found = set()
    start = text.find("\x1b[")
    while start >= 0:
        end = start + 2
        while end < len(text) and (text[end].isdigit() or text[end] == ";"):
            end += 1
        if end < len(text) and text[end] == "m":
            found.add(text[start : end + 1])
        start = text.find("\x1b[", start + 1)
    return found


@pytest.mark.kernel
def test_daemon_on_the_journal_stream_prefixes_every_line(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """``pressured run`` (dry-run, on a scratch group) with stdout on the journal stream: every
    line it writes, from start-up to a clean SIGTERM exit, carries a priority prefix."""
    config = write_config(tmp_path / "p.toml", scope_config(scratch.path, scratch.memcg_path))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        stat = os.fstat(theirs.fileno())
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}",
        }
        daemon = subprocess.Popen(
            [sys.executable, "-m", "pressured", "run", "--dry-run", "--config", str(config)],
            stdout=theirs.fileno(),
            stderr=subprocess.DEVNULL,
            env=env,
        )
        theirs.close()
        try:
            received = b""
            ours.settimeout(CHILD_TIMEOUT_S)
            while b'"controller.ready"' not in received:
                chunk = ours.recv(65536)
                assert chunk, f"the daemon stopped before it was ready: {received[-2000:]!r}"
                received += chunk
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=CHILD_TIMEOUT_S) == 0
            received += _read_all(ours).encode()
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(timeout=10)
    lines = received.decode().splitlines()
    assert len(lines) > 3
    for line in lines:
        assert line[:1] == "<" and line[1:2].isdigit() and line[2:3] == ">", line
        json.loads(line[3:])
    events = {json.loads(line[3:])["event"]: int(line[1]) for line in lines}
    assert events["controller.ready"] == 6
    if not psi.may_use_fast_windows():  # the config's 1 s window is widened, with a warning
        assert events["trigger.adjusted"] == 4
