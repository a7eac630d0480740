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
A second table splits each daemon's RSS by mapping (``/proc/PID/smaps``): Python's object
arenas and large blocks, the malloc heap, and each shared library's touched pages.
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
# Issue 13 ("idle stays idle"): RSS no higher than when it was filed, per loop.
RSS_AT_ISSUE_13_MIB = {"uvloop": 40.9, "asyncio": 38.7}

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


def _is_anonymous(name: str) -> bool:
    return name == ""


def _is_openssl(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.startswith(("libcrypto.", "libssl.", "_ssl.", "_hashlib."))


MAPPING_KINDS = (
    ("anonymous mmaps: Python object arenas, large blocks, thread stacks", _is_anonymous),
    ("malloc heap ([heap])", lambda name: name == "[heap]"),
    ("libpython", lambda name: "/libpython" in name),
    ("OpenSSL (libcrypto, libssl, _ssl, _hashlib)", _is_openssl),
    ("pydantic-core", lambda name: "/pydantic_core/" in name),
    ("uvloop", lambda name: "/uvloop/" in name),
    ("other shared objects and files", lambda name: name.startswith("/")),
    ("stacks, vdso, io_uring and the rest", lambda name: True),
)


def rss_by_mapping(pid: int) -> dict[str, int]:
    """Resident KiB per kind of mapping (see :data:`MAPPING_KINDS`), from ``smaps``."""
    kib = dict.fromkeys((label for label, _match in MAPPING_KINDS), 0)
    label = MAPPING_KINDS[-1][0]
    with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            words = line.split()
            if not words:
                continue
            if words[0] == "Rss:":
                kib[label] += int(words[1])
            elif "-" in words[0] and not words[0].endswith(":"):  # a mapping's header line
                name = words[5] if len(words) > 5 else ""
                label = next(text for text, match in MAPPING_KINDS if match(name))
    return kib


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
    rss_by_mapping_kib: dict[str, int]


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
    memory = Table(
        "idle_memory",
        "Where the idle RSS is (KiB resident per kind of mapping, at the end)",
        ["mapping", "pressured run (uvloop)", "pressured run (asyncio)", "bare event loop"],
    )
    section.tables += [table, memory]
    reason = scratch_unavailable_reason()
    if reason is not None:
        section.skipped = reason
        table.notes.append(f"skipped: {reason}")
        memory.notes.append(f"skipped: {reason}")
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
        mappings = {pid: rss_by_mapping(pid) for _n, _l, pid in watched}
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
                    rss_by_mapping_kib=mappings[pid],
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
        "Locked is VmLck, the size of the mappings mlockall marked, reserved address space "
        "included (8 MiB per thread stack, 64 MiB per malloc arena of a thread): with "
        "MCL_ONFAULT only the pages touched are resident, and those are the RSS column.",
        "Where pressured's wake-ups came from (thread: count): "
        + ("; ".join(busy) if busy else "none"),
    ]
    _memory_table(memory, results)
    _targets(section, results)
    section.notes += reading(results)
    return section


def _memory_table(table: Table, results: list[IdleResult]) -> None:
    columns = [
        next((r for r in results if r.name == "pressured run" and r.loop == "uvloop"), None),
        next((r for r in results if r.name == "pressured run" and r.loop == "asyncio"), None),
        next((r for r in results if r.name.startswith("baseline: bare")), None),
    ]
    for label, _match in MAPPING_KINDS:
        table.rows.append(
            [label] + [str(r.rss_by_mapping_kib.get(label, 0)) if r else "-" for r in columns]
        )
    table.rows.append(
        ["total"] + [str(sum(r.rss_by_mapping_kib.values())) if r else "-" for r in columns]
    )
    table.notes += [
        "From /proc/PID/smaps at the end of the idle period. Python objects live in the "
        "anonymous mappings (obmalloc's 1 MiB arenas, blocks above 512 bytes in the malloc "
        "heap); a shared library counts only the pages that were touched. The daemon locks "
        "what it has touched (mlockall with MCL_ONFAULT), so every page here stays resident.",
        "Not in the daemon while metrics are off: prometheus-client and the HTTP, WSGI and "
        "e-mail modules it imports (about 2.4 MiB): they are imported only when metrics are on.",
    ]


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
    issue13_text = "Idle: RSS no higher than when issue 13 was filed, per loop"
    if not ours:
        section.targets += [
            Target("idle", wake_text, "-", None),
            Target("idle", rss_text, "-", None),
            Target("idle", issue13_text, "-", None),
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
    section.targets.append(
        Target(
            "idle",
            issue13_text,
            ", ".join(
                f"{r.loop}: {r.rss_mib:.1f} MiB (was {RSS_AT_ISSUE_13_MIB[r.loop]:g})" for r in ours
            ),
            all(r.rss_mib <= RSS_AT_ISSUE_13_MIB[r.loop] for r in ours),
        )
    )
