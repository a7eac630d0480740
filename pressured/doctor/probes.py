"""Throw-away probe children (started early so their start-up overlaps the other checks) and
small helpers the check families share."""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import select
import subprocess
import sys
import time

PROBE_TIMEOUT_S = 3.0
"""Longest a probe child may take to get ready or to report; far above the ~60 ms it needs."""


def errno_name(number: int) -> str:
    return errno_mod.errorcode.get(number, str(number))


def start_child(code: str) -> subprocess.Popen[bytes] | None:
    """A probe child, or None when no Python interpreter can be started (reported, not raised)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except (OSError, ValueError):
        return None


def read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """The child's first line, or b"" if it exits or times out first."""
    assert proc.stdout is not None  # noqa: S101 - started with stdout=PIPE just above
    deadline = time.monotonic() + timeout_s
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b""
        readable, _, _ = select.select([proc.stdout], [], [], remaining)
        if not readable:
            return b""
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\n", 1)[0]


def finish_child(proc: subprocess.Popen[bytes]) -> None:
    """Kill (if still running) and reap our own child, whatever happened before."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=PROBE_TIMEOUT_S)
    if proc.stdout is not None:
        proc.stdout.close()
