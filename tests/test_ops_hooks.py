"""Hooks: environment facts for programs, JSON posts for URLs, hard time limits, no raising."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from pressured.config import HookSettings, HooksSettings
from pressured.errors import ConfigError
from pressured.events import KillRecord, KillResult, VictimKind
from pressured.ops import Sink
from pressured.ops.hooks import HookRunner, facts_from_record, hook_environment

Runner = Callable[[Coroutine[Any, Any, Any]], Any]

DUMP_ENV = (
    "import json, os, sys\n"
    "facts = {k: v for k, v in os.environ.items() if k.startswith('PRESSURED_')}\n"
    "facts['_stdin'] = sys.stdin.read()\n"
    "facts['_has_notify_socket'] = 'NOTIFY_SOCKET' in os.environ\n"
    "json.dump(facts, open(sys.argv[1], 'w'))\n"
)


def make_record(**changes: Any) -> KillRecord:
    fields: dict[str, Any] = {
        "kind": VictimKind.PROCESS,
        "target": "pid 77 (hog)",
        "pid": 77,
        "comm": "hog",
        "cgroup": "/jobs",
        "policy": "largest",
        "reason": "largest RSS",
        "scope": "system",
        "level": "full",
        "result": KillResult.KILLED,
        "signal": "SIGKILL",
        "rss_before_bytes": 1 << 30,
    }
    fields.update(changes)
    return KillRecord(**fields)


def program(*args: str, timeout_ms: float = 5000) -> HookSettings:
    return HookSettings(command=args, timeout_ms=timeout_ms)


def gone(pid: int) -> bool:
    """True if no process with this PID exists, or only its zombie (reparented, unreaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return text.rpartition(")")[2].split()[0] in ("Z", "X")


def test_runner_is_a_sink() -> None:
    """HookRunner satisfies the Sink protocol."""
    sink: Sink = HookRunner(HooksSettings())
    assert isinstance(sink, Sink)


def test_facts_become_pressured_variables() -> None:
    """Fact names are upper-cased and prefixed; the daemon's own environment is not passed."""
    os.environ["NOTIFY_SOCKET"] = "/run/should-not-leak"
    try:
        env = hook_environment({"pid": "12", "cgroup.path": "/a", "PRESSURED_X": "y"})
    finally:
        del os.environ["NOTIFY_SOCKET"]
    assert env["PRESSURED_PID"] == "12"
    assert env["PRESSURED_CGROUP_PATH"] == "/a"
    assert env["PRESSURED_X"] == "y"
    assert "PATH" in env
    assert "NOTIFY_SOCKET" not in env


def test_pre_kill_program_gets_facts_in_environment(run_async: Runner, tmp_path: Path) -> None:
    """A pre-kill program sees the victim's facts as PRESSURED_* and an empty stdin."""
    out = tmp_path / "facts.json"
    runner = HookRunner(
        HooksSettings(pre_kill=(program(sys.executable, "-c", DUMP_ENV, str(out)),))
    )
    run_async(runner.pre_kill({"pid": "4242", "comm": "hog", "policy": "largest"}))
    facts = json.loads(out.read_text())
    assert facts["PRESSURED_PID"] == "4242"
    assert facts["PRESSURED_COMM"] == "hog"
    assert facts["PRESSURED_POLICY"] == "largest"
    assert facts["PRESSURED_STAGE"] == "pre_kill"
    assert facts["_stdin"] == ""
    assert facts["_has_notify_socket"] is False
    assert runner.counts[("pre_kill", "ok")] == 1


def test_post_kill_program_gets_the_record(run_async: Runner, tmp_path: Path) -> None:
    """A post-kill program (through on_kill) sees the kill record's fields."""
    out = tmp_path / "facts.json"
    settings = HooksSettings(post_kill=(program(sys.executable, "-c", DUMP_ENV, str(out)),))
    observed: list[tuple[str, str, float]] = []
    runner = HookRunner(settings, observer=lambda *args: observed.append(args))

    async def scenario() -> None:
        await runner.on_kill(make_record())
        await runner.drain()

    run_async(scenario())
    facts = json.loads(out.read_text())
    assert facts["PRESSURED_RESULT"] == "killed"
    assert facts["PRESSURED_RSS_BEFORE_BYTES"] == str(1 << 30)
    assert facts["PRESSURED_TARGET"] == "pid 77 (hog)"
    assert facts["PRESSURED_DRY_RUN"] == "0"
    assert "PRESSURED_SIGNAL_TO_EXIT_MS" not in facts  # None values are left out
    assert [(stage, outcome) for stage, outcome, _ in observed] == [("post_kill", "ok")]


def test_failing_program_is_counted(run_async: Runner) -> None:
    """A non-zero exit is a counted failure, never an exception."""
    runner = HookRunner(HooksSettings(post_kill=(program("false"), program("false"))))
    run_async(runner.post_kill(make_record()))
    assert runner.counts[("post_kill", "failed")] == 2


def test_missing_program_is_a_config_error() -> None:
    """A hook program that does not exist fails at start-up, naming the field."""
    settings = HooksSettings(post_kill=(program("/nonexistent/hook-program"),))
    with pytest.raises(ConfigError) as caught:
        HookRunner(settings)
    assert caught.value.field == "hooks.post_kill.0.command"


def test_program_others_can_write_is_refused(tmp_path: Path) -> None:
    """A hook program writable by other users would run their code as root: refused."""
    script = tmp_path / "hook.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by group or others") as caught:
        HookRunner(HooksSettings(pre_kill=(program(str(script)),)))
    assert caught.value.field == "hooks.pre_kill.0.command"


def test_hanging_program_is_cut_off_and_reaped(run_async: Runner, tmp_path: Path) -> None:
    """A hook that hangs is killed at its limit with its children, and reaped."""
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}.child; echo $$ > {pids}.tmp; mv {pids}.tmp {pids}; wait"
    runner = HookRunner(HooksSettings(pre_kill=(program("sh", "-c", script, timeout_ms=700),)))
    started = time.monotonic()
    run_async(runner.pre_kill({"pid": "1"}))
    elapsed = time.monotonic() - started
    assert elapsed < 0.7 + 1.0
    assert runner.counts[("pre_kill", "timeout")] == 1
    hook_pid = int(pids.read_text())
    child_pid = int(Path(f"{pids}.child").read_text())
    assert gone(hook_pid)
    deadline = time.monotonic() + 2
    while not gone(child_pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone(child_pid)


def test_sleep_60_is_cut_off(run_async: Runner) -> None:
    """`sleep 60` with a 500 ms limit returns within limit + 1 s and leaves no process."""
    runner = HookRunner(HooksSettings(post_kill=(program("sleep", "60", timeout_ms=500),)))
    started = time.monotonic()
    run_async(runner.post_kill(make_record()))
    assert time.monotonic() - started < 1.5
    assert runner.counts[("post_kill", "timeout")] == 1
    assert not runner._running


def test_hooks_run_concurrently(run_async: Runner) -> None:
    """Two slow hooks cost the longest limit, not the sum."""
    hooks = (program("sleep", "60", timeout_ms=600), program("sleep", "60", timeout_ms=600))
    runner = HookRunner(HooksSettings(pre_kill=hooks))
    started = time.monotonic()
    run_async(runner.pre_kill({}))
    assert time.monotonic() - started < 1.1


class _Receiver:
    """A one-shot HTTP server on 127.0.0.1 that records the request it gets."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> _Receiver:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.lower()] = value.strip()
        body = await reader.readexactly(int(headers["content-length"]))
        self.requests.append((lines[0], headers, body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()


def test_http_hook_posts_the_record(run_async: Runner) -> None:
    """A post-kill URL hook receives the kill record as a JSON POST."""

    async def scenario() -> None:
        async with _Receiver() as receiver:
            url = f"http://127.0.0.1:{receiver.port}/hooks/kill?src=pressured"
            runner = HookRunner(HooksSettings(post_kill=(HookSettings(url=url),)))
            await runner.post_kill(make_record())
        request_line, headers, body = receiver.requests[0]
        assert request_line == "POST /hooks/kill?src=pressured HTTP/1.1"
        assert headers["content-type"] == "application/json"
        document = json.loads(body)
        assert document["stage"] == "post_kill"
        assert document["target"] == "pid 77 (hog)"
        assert document["result"] == "killed"
        assert runner.counts[("post_kill", "ok")] == 1

    run_async(scenario())


def test_http_hook_pre_kill_facts_and_error_status(run_async: Runner) -> None:
    """A pre-kill URL hook gets the facts; a 500 answer counts as a failure."""

    async def scenario() -> None:
        async with _Receiver(status=500) as receiver:
            url = f"http://127.0.0.1:{receiver.port}/"
            runner = HookRunner(HooksSettings(pre_kill=(HookSettings(url=url),)))
            await runner.pre_kill({"pid": "5", "comm": "x"})
        assert json.loads(receiver.requests[0][2]) == {"stage": "pre_kill", "pid": "5", "comm": "x"}
        assert runner.counts[("pre_kill", "failed")] == 1

    run_async(scenario())


def test_http_hook_timeout_and_refused(run_async: Runner) -> None:
    """A slow endpoint times out at the limit; a closed port is a failure; neither raises."""

    async def scenario() -> None:
        async with _Receiver(delay_s=30) as slow:
            closed = _Receiver()
            async with closed:
                closed_port = closed.port
            hooks = (
                HookSettings(url=f"http://127.0.0.1:{slow.port}/", timeout_ms=400),
                HookSettings(url=f"http://127.0.0.1:{closed_port}/", timeout_ms=400),
            )
            runner = HookRunner(HooksSettings(post_kill=hooks))
            started = time.monotonic()
            await runner.post_kill(make_record())
            assert time.monotonic() - started < 1.4
        assert runner.counts[("post_kill", "timeout")] == 1
        assert runner.counts[("post_kill", "failed")] == 1

    run_async(scenario())


def test_https_url_is_a_config_error() -> None:
    """Only http:// is supported, and that is said at construction, naming the field."""
    with pytest.raises(ConfigError) as info:
        HookRunner(HooksSettings(post_kill=(HookSettings(url="https://example.invalid/"),)))
    assert info.value.field == "hooks.post_kill.0.url"


def test_facts_from_record_flattens() -> None:
    """facts_from_record gives strings, drops None and nested values."""
    facts = facts_from_record(make_record(figures={"a": 1}))
    assert facts["pid"] == "77"
    assert "figures" not in facts
    assert "mrelease" not in facts


def test_on_kill_does_not_wait_for_hooks(run_async: Runner) -> None:
    """on_kill returns at once; aclose cancels a hook still running and kills its program."""
    runner = HookRunner(HooksSettings(post_kill=(program("sleep", "60", timeout_ms=30_000),)))

    async def scenario() -> None:
        started = time.monotonic()
        await runner.on_kill(make_record())
        assert time.monotonic() - started < 0.5
        for _ in range(10):  # a few loop steps: task -> gather -> hook spawns synchronously
            await asyncio.sleep(0)
        assert runner._running
        async with asyncio.timeout(5):
            await runner.aclose(grace_s=0.1)

    run_async(scenario())
    assert runner.counts[("post_kill", "cancelled")] == 1
    assert not runner._running


# -- tampering: the checked file runs, as an ordinary process ------------------------------------

REPORT_SELF = (
    "import os, sys\n"
    "adj = open(f'/proc/{os.getpid()}/oom_score_adj').read().strip()\n"
    "policy = os.sched_getscheduler(0)\n"
    "nice = os.getpriority(os.PRIO_PROCESS, 0)\n"
    "open(sys.argv[1], 'w').write(f'{adj} {policy} {nice}')\n"
)


def hook_child_report(run_async: Runner, out: Path) -> tuple[int, int, int]:
    """Run a real pre-kill hook that reports its own oom_score_adj, policy and nice value."""
    runner = HookRunner(
        HooksSettings(pre_kill=(program(sys.executable, "-c", REPORT_SELF, str(out)),))
    )
    run_async(runner.pre_kill({"pid": "1"}))
    assert runner.counts[("pre_kill", "ok")] == 1
    adj, policy, nice = out.read_text().split()
    return int(adj), int(policy), int(nice)


def set_own_oom_score_adj(value: int) -> None:
    Path("/proc/self/oom_score_adj").write_text(f"{value}\n")


@pytest.mark.parametrize("daemon_adj", [-1000, 300])
def test_hook_child_does_not_inherit_the_daemons_oom_score_adj(
    run_async: Runner, tmp_path: Path, daemon_adj: int
) -> None:
    """A hook child's /proc/PID/oom_score_adj is 0, not the daemon's (-1000: never killable)."""
    before = int(Path("/proc/self/oom_score_adj").read_text())
    try:
        set_own_oom_score_adj(daemon_adj)
    except PermissionError:
        pytest.skip(f"the kernel refuses oom_score_adj {daemon_adj} here (no CAP_SYS_RESOURCE)")
    try:
        adj, _policy, _nice = hook_child_report(run_async, tmp_path / "report")
    finally:
        set_own_oom_score_adj(before)
    assert adj == 0


def test_hook_child_gets_normal_scheduling(run_async: Runner, tmp_path: Path) -> None:
    """A hook child runs SCHED_OTHER at nice 0 even when the daemon's thread is real-time, -10."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_SYS_NICE) to raise the test thread's priority")
    policy_before = os.sched_getscheduler(0)
    param_before = os.sched_getparam(0)
    nice_before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
    except PermissionError:
        pytest.skip("the kernel refuses SCHED_RR here (no real-time budget for this cgroup)")
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        _adj, policy, nice = hook_child_report(run_async, tmp_path / "report")
    finally:
        os.sched_setscheduler(0, policy_before, param_before)
        os.setpriority(os.PRIO_PROCESS, 0, nice_before)
    assert (policy, nice) == (os.SCHED_OTHER, 0)


def test_bare_name_runs_the_program_found_in_the_checked_path(
    run_async: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare name runs what was checked in the fixed PATH, not a look-alike earlier in the
    daemon's own PATH."""
    planted = tmp_path / "bin"
    planted.mkdir()
    marker = tmp_path / "planted-ran"
    fake = planted / "true"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{planted}:{os.environ.get('PATH', '')}")
    runner = HookRunner(HooksSettings(pre_kill=(program("true"),)))
    run_async(runner.pre_kill({"pid": "1"}))
    assert runner.counts[("pre_kill", "ok")] == 1
    assert not marker.exists()


def test_link_to_a_program_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """A hook linked from a safe directory to one others can write is refused."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    real = shared / "hook.sh"
    real.write_text("#!/bin/sh\nexit 0\n")
    real.chmod(0o755)
    safe = tmp_path / "etc"
    safe.mkdir(mode=0o755)
    (safe / "hook").symlink_to(real)
    with pytest.raises(ConfigError, match=f"{shared} is writable by group or others"):
        HookRunner(HooksSettings(pre_kill=(program(str(safe / "hook")),)))


def test_link_to_a_program_others_can_write_is_refused(tmp_path: Path) -> None:
    """A hook linked to a file others can write is refused, naming the real file."""
    real = tmp_path / "hook.sh"
    real.write_text("#!/bin/sh\nexit 0\n")
    real.chmod(0o777)
    safe = tmp_path / "etc"
    safe.mkdir(mode=0o755)
    (safe / "hook").symlink_to(real)
    with pytest.raises(ConfigError, match=f"{real} is writable by group or others"):
        HookRunner(HooksSettings(pre_kill=(program(str(safe / "hook")),)))


def test_program_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """A safe file in a directory others can write (they could swap it) is refused."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    script = shared / "hook.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    with pytest.raises(ConfigError, match=f"{shared} is writable by group or others"):
        HookRunner(HooksSettings(pre_kill=(program(str(script)),)))


@pytest.mark.parametrize("env", [False, True], ids=["direct", "via-env"])
def test_script_whose_interpreter_others_can_write_is_refused(tmp_path: Path, env: bool) -> None:
    """A safe script is only as safe as its #! interpreter, which runs as root too."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    interpreter = shared / "fakesh"
    interpreter.write_text("#!/bin/sh\nexit 0\n")
    interpreter.chmod(0o755)
    safe = tmp_path / "etc"
    safe.mkdir(mode=0o755)
    script = safe / "hook"
    shebang = f"#!/usr/bin/env {interpreter}" if env else f"#!{interpreter}"
    script.write_text(f"{shebang}\nexit 0\n")
    script.chmod(0o755)
    with pytest.raises(ConfigError, match=f"its interpreter {interpreter}: {shared} is writable"):
        HookRunner(HooksSettings(pre_kill=(program(str(script)),)))


def test_script_with_a_safe_interpreter_is_accepted(tmp_path: Path) -> None:
    """A script run through /usr/bin/env sh (found in the fixed PATH) is accepted."""
    script = tmp_path / "hook"
    script.write_text("#!/usr/bin/env sh\nexit 0\n")
    script.chmod(0o755)
    runner = HookRunner(HooksSettings(pre_kill=(program(str(script)),)))
    assert runner.enabled
