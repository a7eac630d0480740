"""Run ``pressured run`` as a separate process and follow its JSON log lines (tests, the
soak run, and anyone checking a configuration end to end)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

LogLine = dict[str, Any]


class Daemon:
    """``with Daemon(config_path, "--loop", "asyncio") as daemon: daemon.wait_for(...)``."""

    def __init__(self, config: Path | None, *extra: str, env: dict[str, str] | None = None):
        self.argv = [sys.executable, "-m", "pressured", "run", "--log-format", "json"]
        if config is not None:
            self.argv += ["--config", str(config)]
        self.argv += list(extra)
        self.env = {**os.environ, **(env or {})}
        self.lines: list[LogLine] = []
        self.raw: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self.proc: subprocess.Popen[str] | None = None
        self.stderr = ""

    def __enter__(self) -> Daemon:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def _pump(self) -> None:
        if self.proc is None or self.proc.stdout is None:
            return
        for raw in self.proc.stdout:
            with self._changed:
                self.raw.append(raw)
                try:
                    self.lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    continue
                finally:
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def mark(self) -> int:
        """The current end of the log: pass it as ``after`` to wait only for newer lines."""
        with self._changed:
            return len(self.lines)

    def wait_for(
        self,
        event: str | tuple[str, ...],
        timeout_s: float = 30.0,
        where: Callable[[LogLine], bool] | None = None,
        *,
        after: int = 0,
    ) -> LogLine:
        """The first log line at index ``after`` or later (already seen or still to come) with
        this event name (or one of these names) and predicate."""
        names = (event,) if isinstance(event, str) else event
        deadline = time.monotonic() + timeout_s
        index = after
        with self._changed:
            while True:
                while index < len(self.lines):
                    line = self.lines[index]
                    index += 1
                    if line.get("event") in names and (where is None or where(line)):
                        return line
                if self._ended:
                    raise RuntimeError(
                        f"daemon exited ({self.proc and self.proc.poll()}) before {event!r}; "
                        f"log: {self.raw[-20:]} stderr: {self.stderr_text()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {event!r} within {timeout_s} s; log: {self.raw[-20:]}")
                self._changed.wait(remaining)

    def events(self, name: str) -> list[LogLine]:
        return [line for line in self.lines if line.get("event") == name]

    def _running(self) -> subprocess.Popen[str]:
        if self.proc is None:
            raise RuntimeError("the daemon was not started (use 'with Daemon(...)')")
        return self.proc

    def signal(self, sig: int) -> None:
        self._running().send_signal(sig)

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; return the exit code."""
        proc = self._running()
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout_s)

    def stderr_text(self) -> str:
        if self.proc is None or self.proc.stderr is None or self.proc.poll() is None:
            return ""
        if not self.stderr:
            self.stderr = self.proc.stderr.read()
        return self.stderr


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def scope_config(
    cgroup: str,
    memcg_v1: str | None,
    *,
    extra_daemon: str = "",
    extra_guard: str = "",
    extra_kill: str = "",
    policies: str = '[[scopes.policies]]\nname = "oom_score"\n',
) -> str:
    """A configuration watching one scratch cgroup, with metrics on an ephemeral port."""
    memcg = f'memcg_v1 = "{memcg_v1}"\n' if memcg_v1 else ""
    return (
        "[daemon]\nmlockall = false\noom_score_adj = 0\n"
        + extra_daemon
        + "\n[metrics]\nport = 0\n"
        + "\n[guard]\ncooldown_ms = 500\n"
        + extra_guard
        + "\n[kill]\n"
        + extra_kill
        + f'\n[[scopes]]\ncgroup = "{cgroup}"\n{memcg}'
        + '[[scopes.levels]]\nname = "some"\nkind = "some"\nthreshold_ms = 70\nwindow_ms = 1000\n'
        + policies
    )
