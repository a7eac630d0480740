"""Pre-kill and post-kill hooks: a program to run or a URL to POST to, each time-limited.

A hook must never delay a kill past its limit, and never break the controller:

- **Programs** get an argument list (never a shell), stdin from ``/dev/null``, a small
  environment (a fixed ``PATH``, ``LANG``, ``TZ`` and the victim's facts as ``PRESSURED_*``
  variables; none of the daemon's own environment such as ``NOTIFY_SOCKET``), and their own
  session so that on timeout the whole process group is killed and the child reaped. Output
  goes to the daemon's stderr (the service's log).
- **Programs are checked once, at start-up, and the checked file is what runs.** A bare name
  is looked up in the fixed ``PATH`` by us (not by ``execvp`` in the daemon's own ``PATH``);
  links are resolved and the real file and every directory on the way must be out of other
  users' reach (:mod:`pressured.safety`); the absolute real path is what gets executed, with
  ``argv[0]`` as configured.
- **Programs run as ordinary processes.** The daemon runs with ``oom_score_adj`` -1000 (the
  kernel's OOM killer never picks it) and may have raised its priority; a hook inherits
  neither: in the child, before ``exec``, ``oom_score_adj`` goes back to 0, a real-time
  scheduling policy to ``SCHED_OTHER`` and a negative nice value to 0.
- **URLs** (``http://`` only) receive the facts or the kill record as a JSON POST from a tiny
  asyncio client; any 2xx answer is success.

Programs are started with :class:`subprocess.Popen` and waited for through a pidfd on the
loop, not with ``asyncio.create_subprocess_exec``: on Python 3.11 the stdlib loop's default
child watcher starts one thread per child, and creating threads under memory pressure is what
the design avoids; a pidfd reader needs no thread and behaves the same on uvloop.

Outcomes are logged (``hook.ok``, ``hook.failed``, ``hook.timeout``, ``hook.cancelled``), counted in
:attr:`HookRunner.counts` and passed to an ``observer`` (e.g. ``Metrics.observe_hook``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog

from pressured import __version__
from pressured.actuator import wait_exited
from pressured.config import HookSettings, HooksSettings
from pressured.errors import ConfigError
from pressured.events import KillRecord, PressureEvent
from pressured.safety import resolve_trusted

__all__ = ["HookObserver", "HookOutcome", "HookRunner", "Stage", "facts_from_record"]

log = structlog.get_logger("pressured.ops.hooks")

Stage = Literal["pre_kill", "post_kill"]
HookOutcome = Literal["ok", "failed", "timeout"]
HookObserver = Callable[[str, str, float], None]
"""``observer(stage, outcome, duration_s)``, e.g. :meth:`Metrics.observe_hook`."""

ENV_PREFIX = "PRESSURED_"
_PASSED_ENV = ("LANG", "LC_ALL", "TZ")
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Where bare program names are looked up (by us, at start-up) and the ``PATH`` hooks get."""
_MAX_RESPONSE_HEAD = 8192
_KILL_GRACE_S = 0.5


def facts_from_record(record: KillRecord) -> dict[str, str]:
    """A kill record as flat string facts for a hook's environment (None values left out)."""
    facts: dict[str, str] = {}
    for key, value in record.to_dict().items():
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, bool):
            facts[key] = "1" if value else "0"
        else:
            facts[key] = str(value)
    return facts


def hook_environment(facts: Mapping[str, str]) -> dict[str, str]:
    """The environment a program hook runs with: a few basics plus ``PRESSURED_<FACT>``."""
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    # The daemon's own PATH may hold directories nobody checked; the hook's own look-ups use
    # the same fixed PATH its program was found in.
    env["PATH"] = HOOK_PATH
    for key, value in facts.items():
        name = re.sub(r"[^A-Za-z0-9_]", "_", key).upper()
        if not name.startswith(ENV_PREFIX):
            name = ENV_PREFIX + name
        # NUL cannot travel in an environment; a comm or cmdline could hold one in theory.
        env[name] = str(value).replace("\0", "")
    return env


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    path: str
    netloc: str


def _parse_url(url: str, field: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ConfigError(field, f"only http:// URLs are supported, not {url!r}")
    if not parts.hostname:
        raise ConfigError(field, f"no host in {url!r}")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise ConfigError(field, str(exc)) from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(parts.hostname, port, path, parts.netloc)


@dataclass(frozen=True, slots=True)
class _Hook:
    name: str
    """``pre_kill.0``: where the hook is in the configuration, for logs."""
    settings: HookSettings
    target: _Target | None
    executable: str | None = None
    """The program's checked, absolute real path (programs only): what is executed."""

    @property
    def timeout_s(self) -> float:
        return self.settings.timeout_ms / 1000.0


def _resolve_program(program: str, field: str) -> str:
    """The real path of a hook program, checked: it runs as root, so it must exist, be
    executable, and no other user may be able to change it or a directory on its way."""
    found = program if os.sep in program else _search_path(program)
    if found is None:
        raise ConfigError(field, f"program {program!r} not found (searched {HOOK_PATH})")
    outcome = resolve_trusted(found)
    if outcome.reason is not None or outcome.real_path is None:
        if not os.path.lexists(found):
            raise ConfigError(field, f"program {program!r} not found")
        raise ConfigError(field, f"refusing hook program {found}: {outcome.reason}")
    real = outcome.real_path
    if not os.path.isfile(real):
        raise ConfigError(field, f"program {found} is not a regular file")
    if not os.access(real, os.X_OK):
        raise ConfigError(field, f"program {found} is not executable")
    _check_interpreter(real, field)
    return real


_SHEBANG_BYTES = 256  # the kernel reads at most this much of a "#!" line (BINPRM_BUF_SIZE)


def _check_interpreter(script: str, field: str) -> None:
    """A script runs its ``#!`` interpreter as root too: that file must be as safe, and so must
    the program ``/usr/bin/env NAME`` would pick from the hook's fixed PATH."""
    try:
        with open(script, "rb") as handle:
            head = handle.read(_SHEBANG_BYTES)
    except OSError as exc:
        raise ConfigError(field, f"cannot read program {script}: {exc.strerror}") from None
    if not head.startswith(b"#!"):
        return
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if not words:
        return
    interpreters = [words[0]]
    if os.path.basename(words[0]) == "env":
        names = [word for word in words[1:] if not word.startswith("-") and "=" not in word]
        if names:
            found = names[0] if os.sep in names[0] else _search_path(names[0])
            if found is None:
                raise ConfigError(field, f"interpreter {names[0]!r} of {script} not found")
            interpreters.append(found)
    for interpreter in interpreters:
        reason = resolve_trusted(interpreter).reason
        if reason is not None:
            raise ConfigError(
                field, f"refusing hook program {script}: its interpreter {interpreter}: {reason}"
            )


def _search_path(name: str) -> str | None:
    """The first executable ``name`` in :data:`HOOK_PATH`, as ``execvp`` would find it."""
    for directory in HOOK_PATH.split(":"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def build_hook(field: str, hook: HookSettings) -> _Hook:
    """One configured hook, checked (``field`` names it in errors): its URL parsed, or its
    program found and trusted. Raises :class:`~pressured.errors.ConfigError`; starts nothing.
    ``pressured check`` calls it for every hook, the daemon before arming."""
    if hook.url is not None:
        return _Hook(field, hook, _parse_url(hook.url, f"{field}.url"))
    if hook.command:
        return _Hook(field, hook, None, _resolve_program(hook.command[0], f"{field}.command"))
    raise ConfigError(field, "a hook needs a command or a url")


class HookRunner:
    """Runs the configured hooks. Also a :class:`~pressured.ops.Sink` (post-kill on kills).

    Raises :class:`~pressured.errors.ConfigError` at construction for an unusable hook (an
    ``https://`` URL, a hook with neither command nor url); never raises while running one.
    """

    def __init__(self, settings: HooksSettings, *, observer: HookObserver | None = None) -> None:
        self._observer = observer
        self.pre_hooks = self._build("pre_kill", settings.pre_kill)
        self.post_hooks = self._build("post_kill", settings.post_kill)
        self.counts: Counter[tuple[str, str]] = Counter()
        """``(stage, outcome) -> runs``."""
        self._running: set[subprocess.Popen[bytes]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def _build(stage: Stage, hooks: tuple[HookSettings, ...]) -> tuple[_Hook, ...]:
        return tuple(build_hook(f"hooks.{stage}.{index}", hook) for index, hook in enumerate(hooks))

    @property
    def enabled(self) -> bool:
        return bool(self.pre_hooks or self.post_hooks)

    # -- Sink -------------------------------------------------------------------------------

    async def on_pressure(self, event: PressureEvent) -> None:
        """Hooks run around kills only."""

    async def on_kill(self, record: KillRecord) -> None:
        """Start the post-kill hooks and return at once.

        The controller calls its sinks one after another under a short time limit; a
        post-kill hook may legitimately take longer (its own ``timeout_ms``), and must not
        hold up the journal, metrics or the next decision. The runner owns these tasks and
        settles them in :meth:`aclose`. Await :meth:`post_kill` instead to wait for them.
        """
        if not self.post_hooks:
            return
        task = asyncio.get_running_loop().create_task(self.post_kill(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until post-kill hooks started by :meth:`on_kill` have finished."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def aclose(self, grace_s: float = 1.0) -> None:
        """Let running post-kill hooks finish for up to ``grace_s``, then cancel them and
        kill any hook program still running."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for process in list(self._running):
            _kill_group(process)
        deadline = time.monotonic() + _KILL_GRACE_S
        while self._running and time.monotonic() < deadline:
            self._reap_leftovers()
            if self._running:
                await asyncio.sleep(0.01)  # SIGKILLed children exit within milliseconds
        if self._running:
            log.warning("hook.unreaped", pids=[process.pid for process in self._running])

    # -- running ----------------------------------------------------------------------------

    async def pre_kill(self, facts: Mapping[str, str]) -> None:
        """Run every pre-kill hook concurrently; returns within the longest hook's limit.

        ``facts`` describe the chosen victim (``pid``, ``comm``, ``cgroup``, ``policy``,
        ``reason``, ``scope``, ``level``, ...); programs see them as ``PRESSURED_<KEY>``,
        URLs receive them as a JSON object.
        """
        if not self.pre_hooks:
            return
        body = {"stage": "pre_kill", **facts}
        await self._run_all("pre_kill", self.pre_hooks, facts, body)

    async def post_kill(self, record: KillRecord) -> None:
        """Run every post-kill hook concurrently with the record (env facts or JSON body)."""
        if not self.post_hooks:
            return
        body = {"stage": "post_kill", **record.to_dict()}
        await self._run_all("post_kill", self.post_hooks, facts_from_record(record), body)

    async def _run_all(
        self,
        stage: Stage,
        hooks: tuple[_Hook, ...],
        facts: Mapping[str, str],
        body: Mapping[str, Any],
    ) -> None:
        env_facts = {"stage": stage, **facts}
        payload = json.dumps(body, default=str).encode()
        await asyncio.gather(*(self._run_one(stage, hook, env_facts, payload) for hook in hooks))

    async def _run_one(
        self, stage: Stage, hook: _Hook, facts: Mapping[str, str], payload: bytes
    ) -> None:
        started = time.perf_counter()
        outcome: HookOutcome = "ok"
        detail: dict[str, Any] = {}
        try:
            if hook.target is not None:
                status = await self._post(hook.target, payload, hook.timeout_s)
                detail["http_status"] = status
                if not 200 <= status < 300:
                    outcome = "failed"
            else:
                returncode = await self._run_program(hook, facts)
                detail["returncode"] = returncode
                if returncode != 0:
                    outcome = "failed"
        except TimeoutError:
            outcome = "timeout"
        except asyncio.CancelledError:
            # The caller gave up (shutdown, its own limit): the program group is killed;
            # say so, then let the cancellation through.
            self.counts[(stage, "cancelled")] += 1
            log.warning("hook.cancelled", hook=hook.name, stage=stage)
            raise
        except Exception as exc:  # a hook must never break the controller
            outcome = "failed"
            detail["error"] = repr(exc)
        duration = time.perf_counter() - started
        self.counts[(stage, outcome)] += 1
        event = "hook.ok" if outcome == "ok" else f"hook.{outcome}"
        emit = log.info if outcome == "ok" else log.warning
        emit(
            event,
            hook=hook.name,
            stage=stage,
            target=hook.settings.url or hook.settings.command[0],
            ms=round(duration * 1000, 3),
            limit_ms=hook.settings.timeout_ms,
            **detail,
        )
        if self._observer is not None:
            try:
                self._observer(stage, outcome, duration)
            except Exception:
                log.exception("hook.observer_failed")

    async def _run_program(self, hook: _Hook, facts: Mapping[str, str]) -> int:
        self._reap_leftovers()
        assert hook.executable is not None  # noqa: S101 -- every program hook has one
        process = _spawn(hook.executable, hook.settings.command, hook_environment(facts))
        self._running.add(process)
        pidfd = os.pidfd_open(process.pid)
        try:
            exited = await wait_exited(pidfd, hook.timeout_s)
            if exited is None:
                # Kill the group while the leader is unreaped, so its PID (= the group id)
                # cannot have been reused by anyone else; then give the SIGKILL a moment.
                _kill_group(process)
                await wait_exited(pidfd, _KILL_GRACE_S)
        except BaseException:
            _kill_group(process)  # cancelled: no waiting, reaped later
            raise
        finally:
            os.close(pidfd)
            # Exited (pidfd readable) means waitpid(WNOHANG) reaps it without blocking.
            if process.poll() is not None:
                self._running.discard(process)
        if exited is None:
            raise TimeoutError(f"hook program ran past {hook.timeout_s:g} s")
        return process.returncode

    def _reap_leftovers(self) -> None:
        """Reap hook programs that outlived their SIGKILL grace (stuck in the kernel)."""
        for process in list(self._running):
            if process.returncode is None and process.poll() is None:
                continue
            self._running.discard(process)

    @staticmethod
    async def _post(target: _Target, payload: bytes, timeout_s: float) -> int:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(target.host, target.port)
            try:
                head = (
                    f"POST {target.path} HTTP/1.1\r\n"
                    f"Host: {target.netloc}\r\n"
                    f"User-Agent: pressured/{__version__}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                writer.write(head.encode("latin-1") + payload)
                await writer.drain()
                status_line = await reader.readline()
                # Read the head so the server sees a clean close; the body is ignored.
                read = len(status_line)
                while read < _MAX_RESPONSE_HEAD:
                    line = await reader.readline()
                    read += len(line)
                    if line in (b"\r\n", b"\n", b""):
                        break
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        parts = status_line.split(maxsplit=2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
        return int(parts[1])


def _spawn(
    executable: str, command: tuple[str, ...], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    # Forked on the loop thread as asyncio's own subprocess support does; we only avoid
    # asyncio's per-child watcher thread.
    return subprocess.Popen(
        list(command),  # an argument list, never a shell; argv[0] as configured
        executable=executable,  # the file that was checked, not a new PATH search
        stdin=subprocess.DEVNULL,
        stdout=_stdout_target(),
        env=env,
        close_fds=True,
        start_new_session=True,  # its own process group, killed as one on timeout
        preexec_fn=_as_ordinary_process,  # noqa: PLW1509 -- see _as_ordinary_process
    )


_NORMAL_SCHEDULING = os.sched_param(0)
_REALTIME_POLICIES = frozenset({os.SCHED_FIFO, os.SCHED_RR})
_RESET_ON_FORK = getattr(os, "SCHED_RESET_ON_FORK", 0x40000000)


def _as_ordinary_process() -> None:
    """Run in the hook's child between fork and exec: give up the daemon's protections.

    Without this a hook inherits ``oom_score_adj`` -1000 (the OOM killer can never take it,
    however large it grows) and the daemon's scheduling. ``oom_score_adj`` goes back to 0, a
    real-time policy to ``SCHED_OTHER``, a negative nice value to 0. Giving up protection
    needs no capability, so that part cannot be refused (if it fails anyway, the spawn fails
    and the hook counts as failed rather than running unkillable). Going from a *positive*
    ``oom_score_adj`` down to 0 may be refused without CAP_SYS_RESOURCE; the hook then stays
    as killable as the daemon the operator configured, which is fine. A daemon made less
    important (nice 10) keeps its hooks so too: raising priority is not ours to do.

    Python's warning about ``preexec_fn`` and threads is about code that takes a lock another
    thread held at fork time (imports, logging, I/O buffers, C libraries). This function only
    makes system calls through already-imported ``os`` functions and takes no lock; CPython
    reinitialises its own runtime state in the child before calling it.
    """
    fd = os.open("/proc/self/oom_score_adj", os.O_RDWR | os.O_CLOEXEC)
    try:
        current = int(os.read(fd, 16))
        if current != 0:
            try:
                os.write(fd, b"0")
            except PermissionError:
                if current < 0:
                    raise
    finally:
        os.close(fd)
    if os.sched_getscheduler(0) & ~_RESET_ON_FORK in _REALTIME_POLICIES:
        os.sched_setscheduler(0, os.SCHED_OTHER, _NORMAL_SCHEDULING)
    if os.getpriority(os.PRIO_PROCESS, 0) < 0:
        os.setpriority(os.PRIO_PROCESS, 0, 0)


def _stdout_target() -> int:
    """The hook's stdout joins our stderr (the service log) when we have one."""
    try:
        os.fstat(2)
    except OSError:
        return subprocess.DEVNULL
    return 2


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.returncode is not None:
        return  # reaped: its PID may belong to someone else now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
