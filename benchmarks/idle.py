"""Idle cost: what the daemon spends while nothing happens.

``pressured run`` on its defaults (metrics off through ``PRESSURED_METRICS__ENABLED=false``),
once on uvloop and once on the stdlib loop, watching an empty scratch cgroup in dry-run mode
(so no pressure from other work on this shared machine reaches it, and nothing could be
killed if it did). Beside them, two baselines started the same way: a bare Python process
idling in an event loop (the interpreter's floor), and a 100 ms polling loop (what a polling
daemon pays for its timer). All four run at the same time for the measured period.

Figures, between two readings after start-up: CPU time (utime + stime of every thread, from
``/proc/PID/stat``), wake-ups (voluntary context switches summed over
``/proc/PID/task/*/status``), and RSS (``VmRSS``) with locked memory (``VmLck``) at the end.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.common import REPO, Config, Progress, Section, Table, Target
from benchmarks.episodes import DaemonProcess

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
RSS_TARGET_MIB = 40.0

BARE_LOOP = (
    "import asyncio, sys\n"
    "import uvloop\n"
    "print('ready', flush=True)\n"
    "with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:\n"
    "    runner.run(asyncio.Event().wait())\n"
)
POLLING_LOOP = (
    "import time\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    with open('/proc/pressure/memory') as f:\n"
    "        f.read()\n"
    "    with open('/proc/meminfo') as f:\n"
    "        f.read()\n"
    "    time.sleep(0.1)\n"
)


@dataclass
class Reading:
    cpu_ms: float
    voluntary: int
    involuntary: int
    threads: int
    rss_kib: int
    locked_kib: int
    per_thread: dict[str, int]


def read_process(pid: int) -> Reading:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    cpu_ms = (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICK
    voluntary = involuntary = 0
    per_thread: dict[str, int] = {}
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    for task in tasks:
        with contextlib.suppress(OSError):
            status = _status(task / "status")
            comm = (task / "comm").read_text().strip()
            voluntary += status.get("voluntary_ctxt_switches", 0)
            involuntary += status.get("nonvoluntary_ctxt_switches", 0)
            key = "main thread" if task.name == str(pid) else f"thread {task.name} ({comm})"
            per_thread[key] = status.get("voluntary_ctxt_switches", 0)
    status = _status(Path(f"/proc/{pid}/status"))
    return Reading(
        cpu_ms,
        voluntary,
        involuntary,
        len(tasks),
        status.get("VmRSS", 0),
        status.get("VmLck", 0),
        per_thread,
    )


def _status(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            values[key] = int(words[0])
    return values


@dataclass
class IdleResult:
    name: str
    loop: str
    seconds: float
    cpu_ms: float
    wakeups: int
    involuntary: int
    threads: int
    rss_mib: float
    locked_mib: float
    wakeups_by_thread: dict[str, int]
    pid: int


def _started_plain(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(REPO),
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        proc.wait()
        raise RuntimeError("baseline process did not start")
    return proc


QUIET_LABEL = "pressured run, starvation check off"


def run(config: Config, progress: Progress) -> Section:
    from pressured.testing.scratch import ScratchGroup, scratch_unavailable_reason

    section = Section("idle")
    table = Table(
        "idle",
        f"Idle cost over {config.idle_seconds:g} s with no pressure",
        [
            "process",
            "loop",
            "CPU time (ms)",
            "wake-ups",
            "wake-ups / min",
            "threads",
            "RSS (MiB)",
            "locked (MiB)",
        ],
    )
    section.tables.append(table)
    reason = scratch_unavailable_reason()
    if reason is not None:
        section.skipped = reason
        table.notes.append(f"skipped: {reason}")
        _targets(section, [])
        return section
    results: list[IdleResult] = []
    env = {"PRESSURED_METRICS__ENABLED": "false"}
    name = f"pressured-bench-idle-{uuid.uuid4().hex[:8]}"
    with ScratchGroup(None, name=name) as group, contextlib.ExitStack() as stack:
        daemons = []
        for loop in ("uvloop", "asyncio"):
            daemon = stack.enter_context(
                DaemonProcess(["--cgroup", group.path, "--dry-run", "--loop", loop], env=env)
            )
            daemons.append((loop, daemon))
        # The same daemon without the trigger-starvation check (the one timer an unprivileged
        # daemon keeps: a pressure-file read every 10 s), to show where the wake-ups come from.
        quiet_config = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "quiet.toml"
        quiet_config.write_text("[[scopes]]\nstarvation_check_s = 0\n")
        quiet_config.chmod(0o600)
        quiet = stack.enter_context(
            DaemonProcess(["-c", str(quiet_config), "--cgroup", group.path, "--dry-run"], env=env)
        )
        for loop, daemon in [*daemons, ("uvloop", quiet)]:
            if daemon.wait_for("controller.ready", 30) is None:
                raise RuntimeError(f"the {loop} daemon did not report controller.ready")
        bare = _started_plain(BARE_LOOP)
        stack.callback(_stop, bare)
        poller = _started_plain(POLLING_LOOP)
        stack.callback(_stop, poller)
        watched: list[tuple[str, str, int]] = [
            ("pressured run", loop, daemon.proc.pid)
            for loop, daemon in daemons
            if daemon.proc is not None
        ]
        if quiet.proc is not None:
            watched.append((QUIET_LABEL, "uvloop", quiet.proc.pid))
        watched += [
            ("baseline: bare Python event loop", "uvloop", bare.pid),
            ("baseline: 100 ms polling loop", "time.sleep", poller.pid),
        ]
        time.sleep(3.0)  # let start-up finish (first log lines flushed, threads parked)
        before = {pid: read_process(pid) for _n, _l, pid in watched}
        started = time.monotonic()
        progress("idle", f"measuring {len(watched)} idle processes for {config.idle_seconds:g} s")
        time.sleep(config.idle_seconds)
        seconds = time.monotonic() - started
        after = {pid: read_process(pid) for _n, _l, pid in watched}
        for label, loop, pid in watched:
            a, b = before[pid], after[pid]
            results.append(
                IdleResult(
                    name=label,
                    loop=loop,
                    seconds=round(seconds, 2),
                    cpu_ms=round(b.cpu_ms - a.cpu_ms, 1),
                    wakeups=b.voluntary - a.voluntary,
                    involuntary=b.involuntary - a.involuntary,
                    threads=b.threads,
                    rss_mib=round(b.rss_kib / 1024, 1),
                    locked_mib=round(b.locked_kib / 1024, 1),
                    wakeups_by_thread={
                        key: count - a.per_thread.get(key, 0)
                        for key, count in b.per_thread.items()
                        if count - a.per_thread.get(key, 0)
                    },
                    pid=pid,
                )
            )
        for _loop, daemon in daemons:
            alive = daemon.proc is not None and daemon.proc.poll() is None
            section.raw.setdefault("daemon_alive_at_end", []).append(alive)
            kills = [ln for ln in daemon.lines if str(ln.get("event", "")).startswith("victim.")]
            section.raw.setdefault("daemon_kill_lines", []).append(len(kills))
    section.raw["results"] = [asdict(r) for r in results]
    for r in results:
        table.rows.append(
            [
                r.name,
                r.loop,
                f"{r.cpu_ms:.0f}",
                str(r.wakeups),
                f"{r.wakeups * 60 / r.seconds:.1f}",
                str(r.threads),
                f"{r.rss_mib:.1f}",
                f"{r.locked_mib:.1f}",
            ]
        )
    busy = [
        f"{r.loop}: " + ", ".join(f"{k} {v}" for k, v in r.wakeups_by_thread.items())
        for r in results
        if r.name == "pressured run" and r.wakeups_by_thread
    ]
    table.notes += [
        "pressured: `python3 -m pressured run --cgroup <empty scratch group> --dry-run "
        "[--loop asyncio]` with PRESSURED_METRICS__ENABLED=false, otherwise defaults (two "
        "PSI triggers armed, reaper and I/O threads started, mlockall on). Dry-run and an "
        "empty group keep other people's pressure on this shared machine out of the "
        "measurement.",
        "Wake-ups: voluntary context switches summed over all threads; CPU time: utime + "
        f"stime at {CLOCK_TICK} ticks/s (10 ms resolution); RSS and locked memory at the end.",
        "Where pressured's wake-ups came from (thread: count): "
        + ("; ".join(busy) if busy else "none"),
    ]
    _targets(section, results)
    section.notes += reading(results)
    return section


def reading(results: list[IdleResult]) -> list[str]:
    ours = [r for r in results if r.name == "pressured run"]
    bare = next((r for r in results if r.name.startswith("baseline: bare")), None)
    polling = next((r for r in results if r.name.startswith("baseline: 100 ms")), None)
    if not ours or bare is None or polling is None:
        return []
    seconds = ours[0].seconds
    woke = ", ".join(f"{r.wakeups} ({r.loop})" for r in ours)
    rss = ", ".join(f"{r.rss_mib:.1f} MiB ({r.loop})" for r in ours)
    quiet = next((r for r in results if r.name == QUIET_LABEL), None)
    quiet_text = (
        f" With the trigger-starvation check off (`starvation_check_s = 0`, or CAP_SYS_RESOURCE,"
        f" which makes it unnecessary) the daemon woke {quiet.wakeups} times: the check's one "
        "pressure-file read every 10 s is the only timer left."
        if quiet is not None
        else ""
    )
    return [
        f"Idle: over {seconds:.0f} s the daemon woke {woke} times and used "
        f"{', '.join(f'{r.cpu_ms:.0f} ms' for r in ours)} of CPU; a 100 ms polling loop woke "
        f"{polling.wakeups} times and used {polling.cpu_ms:.0f} ms. RSS {rss} against "
        f"{bare.rss_mib:.1f} MiB for a bare interpreter with uvloop imported: the rest is "
        "pressured's imports (pydantic, structlog) and its threads, locked in memory." + quiet_text,
    ]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _targets(section: Section, results: list[IdleResult]) -> None:
    ours = [r for r in results if r.name == "pressured run"]
    wake_text = "Idle: no timer wake-ups while nothing happens"
    rss_text = f"Idle: RSS at most {RSS_TARGET_MIB:g} MiB"
    if not ours:
        section.targets += [
            Target("idle", wake_text, "-", None),
            Target("idle", rss_text, "-", None),
        ]
        return
    section.targets.append(
        Target(
            "idle",
            wake_text,
            ", ".join(f"{r.loop}: {r.wakeups} wake-ups in {r.seconds:.0f} s" for r in ours),
            all(r.wakeups == 0 for r in ours),
        )
    )
    section.targets.append(
        Target(
            "idle",
            rss_text,
            ", ".join(f"{r.loop}: {r.rss_mib:.1f} MiB" for r in ours),
            all(r.rss_mib <= RSS_TARGET_MIB for r in ours),
        )
    )
