"""Start-up is part of reaction: exec -> armed -> first kill, and SIGTERM -> exit.

A daemon restarted by systemd or the kubelet in the middle of a memory crisis reacts only once
armed. This section measures, with ``pressured run`` scoped to a scratch group:

* **quiet**: nothing else happening in the group;
* **beside a thrasher**: a real page-cache thrasher fills the group before the daemon starts,
  so the first kill is a real one;
* **cold, beside a thrasher**: as above, and every file the daemon loads (its modules, the
  standard library's, shared libraries) is first evicted from the page cache, as a host that
  thrashes does to it: each import is read back from disk.

Each run gives exec -> ``controller.ready`` (read from the log as it arrives, and the daemon's
own ``since_exec_ms`` from ``/proc/self/stat``), exec -> first ``victim.killed``, and SIGTERM
-> exit. The baseline, measured in the same run: ``python -c 'import json, asyncio'``, exec to
exit. A second table gives the CPU cost of importing each dependency (median of pairs, each
pair a bare ``import json, asyncio`` and the same plus the module, in fresh interpreters).
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, Config, Progress, Section, Summary, Table, Target, fmt_ms
from pressured.testing.scratch import ScratchGroup, evict_from_cache, make_thrash_file

GROUP_LIMIT = 64 << 20
THRASH_FILE = "/var/tmp/pressured-bench-startup-thrash.bin"
ARMED_QUIET_S = 0.5
ARMED_THRASH_S = 3.0
EXIT_S = 1.0
READY_TIMEOUT_S = 60.0
KILL_TIMEOUT_S = 60.0
BASELINE = "import json, asyncio"

# How examples/systemd/pressured.service starts the daemon (IOSchedulingClass=realtime,
# IOSchedulingPriority=0, Nice=-10).
UNIT_PRIORITIES = ("ionice", "-c1", "-n0", "nice", "-n", "-10")
COLD = "cold, beside a thrasher"
COLD_UNIT = "cold, beside a thrasher, unit priorities"


@dataclass(frozen=True)
class Scenario:
    name: str
    thrash: bool
    cold: bool
    prefix: tuple[str, ...] = ()


SCENARIOS = (
    Scenario("quiet", thrash=False, cold=False),
    Scenario("beside a thrasher", thrash=True, cold=False),
    Scenario(COLD, thrash=True, cold=True),
    Scenario(COLD_UNIT, thrash=True, cold=True, prefix=UNIT_PRIORITIES),
)

BEFORE_ARMING = "before arming: cli.run + daemon + uvloop"
EVERYTHING = "everything: + ops.metrics, http, journal, hooks"
# What ``pressured run`` imports before arming, and the pieces it now imports after.
IMPORT_ROWS: tuple[tuple[str, str], ...] = (
    ("pydantic", "pydantic"),
    ("structlog", "structlog"),
    ("uvloop", "uvloop"),
    ("prometheus_client", "prometheus_client"),
    ("aiofiles", "aiofiles"),
    ("pressured.config (with pydantic)", "pressured.config"),
    ("pressured.controller", "pressured.controller"),
    ("pressured.daemon", "pressured.daemon"),
    (BEFORE_ARMING, "pressured.cli.run, pressured.daemon, uvloop"),
    (
        EVERYTHING,
        "pressured.cli.run, pressured.daemon, uvloop, pressured.ops.metrics, "
        "pressured.ops.http, pressured.ops.journal, pressured.ops.hooks",
    ),
)


# -- one daemon ---------------------------------------------------------------------------------
@dataclass
class StartRun:
    scenario: str
    first_line_s: float | None = None
    ready_s: float | None = None
    since_exec_s: float | None = None
    first_kill_s: float | None = None
    exit_s: float | None = None
    exit_code: int | None = None
    notes: list[str] = field(default_factory=list)


class FollowedDaemon:
    """``pressured run`` with each JSON log line stamped with its arrival time."""

    def __init__(self, config: Path, prefix: tuple[str, ...] = ()) -> None:
        self.argv = [*prefix, sys.executable, "-m", "pressured", "run", "--log-format", "json"]
        self.argv += ["--config", str(config)]
        self.history: list[tuple[float, dict[str, Any]]] = []
        self._changed = threading.Condition()
        self._ended = False
        self.proc: subprocess.Popen[str] | None = None
        self.exec_at = 0.0

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.exec_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        threading.Thread(target=self._pump, name="bench-startup-log", daemon=True).start()

    def _pump(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                line = json.loads(raw)
                if isinstance(line, dict):
                    with self._changed:
                        self.history.append((time.monotonic(), line))
                        self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, event: str, timeout_s: float) -> tuple[float, dict[str, Any]] | None:
        """(seconds since exec, line) of the first line named ``event`` (a kill can be logged
        before ``controller.ready``: the scopes run as soon as they are armed), or None."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for arrived, line in self.history:
                    if line.get("event") == event:
                        return arrived - self.exec_at, line
                remaining = deadline - time.monotonic()
                if self._ended or remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def index_of(self, event: str) -> int | None:
        with self._changed:
            for index, (_arrived, line) in enumerate(self.history):
                if line.get("event") == event:
                    return index
        return None

    def terminate(self) -> tuple[float, int]:
        """SIGTERM; (seconds to exit, exit code)."""
        assert self.proc is not None
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        return time.monotonic() - sent, code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _config(directory: Path, scratch: ScratchGroup) -> Path:
    memcg = f'memcg_v1 = "{scratch.memcg_path}"\n' if scratch.memcg_path else ""
    path = directory / "startup.toml"
    path.write_text(
        "[daemon]\nmlockall = true\noom_score_adj = 0\n"
        "\n[metrics]\nport = 0\n"
        f'\n[[scopes]]\ncgroup = "{scratch.path}"\n{memcg}'
        '[[scopes.policies]]\nname = "oom_score"\n'
    )
    path.chmod(0o600)
    return path


def one_start(
    scenario: str,
    directory: Path,
    *,
    thrash: bool,
    cold: list[str],
    prefix: tuple[str, ...] = (),
) -> StartRun:
    run = StartRun(scenario)
    with ScratchGroup(GROUP_LIMIT) as scratch:
        if thrash:
            # The previous run's group left the file's pages cached (charged to the parent
            # once its group went): resident pages never fault, so drop them first.
            evict_from_cache(THRASH_FILE)
            scratch.spawn_workload("thrash", THRASH_FILE)
            time.sleep(1.0)  # let the thrash settle into steady refaulting
        for path in cold:
            with contextlib.suppress(OSError):
                evict_from_cache(path)
        daemon = FollowedDaemon(_config(directory, scratch), prefix)
        daemon.start()
        try:
            ready = daemon.wait_for("controller.ready", READY_TIMEOUT_S)
            if ready is None:
                run.notes.append("no controller.ready")
                return run
            run.ready_s = ready[0]
            first = daemon.wait_for("daemon.starting", 0)
            run.first_line_s = first[0] if first is not None else None
            since = ready[1].get("since_exec_ms")
            run.since_exec_s = since / 1000 if isinstance(since, int | float) else None
            if thrash:
                killed = daemon.wait_for("victim.killed", KILL_TIMEOUT_S)
                if killed is None:
                    run.notes.append("no kill")
                else:
                    run.first_kill_s = killed[0]
                    kill_at, ready_at = (
                        daemon.index_of("victim.killed"),
                        daemon.index_of("controller.ready"),
                    )
                    if kill_at is not None and ready_at is not None and kill_at < ready_at:
                        run.notes.append("killed before the ready line")
            run.exit_s, run.exit_code = daemon.terminate()
        finally:
            daemon.kill()
    return run


# -- baseline and imports -------------------------------------------------------------------------
def _child_cpu_s(code: str) -> tuple[float, float]:
    """(wall seconds exec -> exit, CPU seconds) of ``python -c code``."""
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"python -c {code!r} exited {proc.returncode}")
    return time.monotonic() - began, usage.ru_utime + usage.ru_stime


def import_table(pairs: int) -> tuple[Table, dict[str, Any]]:
    table = Table(
        "startup_imports",
        "Start-up: CPU to import each dependency (fresh interpreter, median of pairs)",
        [
            "import",
            "CPU ms over baseline (median of pairs)",
            "process CPU vs baseline (median)",
            "least CPU over least baseline",
            "pairs",
        ],
    )
    raw: dict[str, Any] = {}
    for label, modules in (("baseline: " + BASELINE, ""), *IMPORT_ROWS):
        extra, ratios, base_cpu, with_cpu = [], [], [], []
        for _ in range(pairs):
            _wall, base = _child_cpu_s(BASELINE)
            _wall, with_it = _child_cpu_s(f"{BASELINE}; import {modules}" if modules else BASELINE)
            extra.append((with_it - base) * 1000)
            ratios.append(with_it / base if base > 0 else float("nan"))
            base_cpu.append(base * 1000)
            with_cpu.append(with_it * 1000)
        median_extra = Summary.of(extra).median
        median_ratio = Summary.of(ratios).median
        least = min(with_cpu) - min(base_cpu)
        if not modules:
            table.rows.append(
                [
                    label,
                    f"({fmt_ms(Summary.of(base_cpu).median)} ms)",
                    "1x",
                    f"({fmt_ms(min(base_cpu))} ms)",
                    str(pairs),
                ]
            )
        else:
            table.rows.append(
                [label, fmt_ms(median_extra), f"{median_ratio:.1f}x", fmt_ms(least), str(pairs)]
            )
        raw[label] = {
            "extra_cpu_ms": extra,
            "ratio": ratios,
            "baseline_cpu_ms": base_cpu,
            "with_cpu_ms": with_cpu,
        }
    moved = (
        Summary.of(raw[EVERYTHING]["extra_cpu_ms"]).median
        - Summary.of(raw[BEFORE_ARMING]["extra_cpu_ms"]).median
    )
    moved_least = min(raw[EVERYTHING]["with_cpu_ms"]) - min(raw[BEFORE_ARMING]["with_cpu_ms"])
    table.rows.append(
        [
            "moved after arming (everything - before arming)",
            fmt_ms(moved),
            "-",
            fmt_ms(moved_least),
            "-",
        ]
    )
    table.notes.append(
        "Each pair runs the baseline and the row's imports in two fresh interpreters, back to "
        "back, and compares their CPU time (user + system, from wait4); the median of the pairs "
        "is shown. 'process CPU vs baseline' is the whole process's CPU over the baseline's. "
        "On a loaded machine CPU times inflate at random; the least of each series is the "
        "steadier figure there."
    )
    return table, raw


def compiled_bytecode() -> str:
    """Make sure every pressured module has its .pyc, as a pip install does; say what was done."""
    package = REPO / "pressured"
    sources = list(package.rglob("*.py"))
    missing = [s for s in sources if not Path(importlib_cache(s)).exists()]
    if missing:
        compileall.compile_dir(str(package), quiet=1)
        return (
            f"compiled {len(missing)} of {len(sources)} pressured modules first "
            "(pip does at install)"
        )
    return f"all {len(sources)} pressured modules had their .pyc"


def importlib_cache(source: Path) -> str:
    import importlib.util

    return importlib.util.cache_from_source(str(source))


def loaded_files() -> list[str]:
    """Every file ``pressured run`` reads code from: modules and shared libraries."""
    code = (
        "import sys, json\n"
        "import pressured.cli.run, pressured.daemon, uvloop\n"
        "import pressured.ops.metrics, pressured.ops.http, pressured.ops.journal, "
        "pressured.ops.hooks\n"
        "from pressured.policies.registry import builtin_policies; builtin_policies()\n"
        "import importlib.util\n"
        "files = set()\n"
        "for m in list(sys.modules.values()):\n"
        "    f = getattr(m, '__file__', None)\n"
        "    if f:\n"
        "        files.add(f)\n"
        "        if f.endswith('.py'):\n"
        "            files.add(importlib.util.cache_from_source(f))\n"
        "for line in open('/proc/self/maps'):\n"
        "    parts = line.split()\n"
        "    if len(parts) >= 6 and parts[5].startswith('/'):\n"
        "        files.add(parts[5])\n"
        "files.add(sys.executable)\n"
        "print(json.dumps(sorted(files)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return [path for path in json.loads(done.stdout) if os.path.isfile(path)]


# -- the floor of SIGTERM -> exit --------------------------------------------------------------
def trigger_close_table(closes: int) -> tuple[Table, dict[str, Any]]:
    """What closing one PSI trigger fd costs (the daemon closes one per armed trigger when it
    stops, and the kernel would at exit anyway), beside closing a plain fd of the same file."""
    samples: dict[str, list[float]] = {"PSI trigger fd": [], "same file, no trigger": []}
    with ScratchGroup(GROUP_LIMIT) as scratch:
        path = str(scratch.group.directory / "memory.pressure")
        for _ in range(closes):
            for label, spec in (
                ("PSI trigger fd", b"some 150000 2000000\0"),
                ("same file, no trigger", None),
            ):
                fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                if spec is not None:
                    os.write(fd, spec)
                began = time.perf_counter()
                os.close(fd)
                samples[label].append((time.perf_counter() - began) * 1000)
    table = Table(
        "startup_trigger_close",
        "Stop floor: close() of one fd on a cgroup's memory.pressure (ms)",
        ["fd", "closes", "median", "max"],
    )
    for label, values in samples.items():
        summary = Summary.of(values)
        table.rows.append([label, str(summary.n), fmt_ms(summary.median), fmt_ms(summary.max)])
    table.notes.append(
        "Closing a trigger fd waits in the kernel (psi_trigger_destroy); the daemon pays it once "
        "per armed trigger (two levels per scope, plus the watchdog's) when it disarms."
    )
    return table, samples


# -- the section -------------------------------------------------------------------------------
def _summary_cells(values: list[float | None]) -> list[str]:
    seen = [v * 1000 for v in values if v is not None]
    summary = Summary.of(seen)
    return [fmt_ms(summary.median), fmt_ms(summary.max)]


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pressured-bench-startup-") as name:
        path = Path(name)
        path.chmod(0o700)
        yield path


def run(config: Config, progress: Progress) -> Section:
    section = Section("startup")
    reps = 1 if config.smoke else 5
    quiet_reps = 1 if config.smoke else 7
    pairs = 1 if config.smoke else 7
    section.notes.append(compiled_bytecode())
    progress("startup", section.notes[-1])
    make_thrash_file(THRASH_FILE, config.thrash_file_mib << 20)
    cold = loaded_files()
    progress("startup", f"{len(cold)} files to evict for the cold starts")
    baseline = [_child_cpu_s(BASELINE)[0] for _ in range(quiet_reps)]
    runs: list[StartRun] = []
    try:
        with _workdir() as directory:
            for scenario in SCENARIOS:
                count = quiet_reps if scenario.name == "quiet" else reps
                for index in range(count):
                    one = one_start(
                        scenario.name,
                        directory,
                        thrash=scenario.thrash,
                        cold=cold if scenario.cold else [],
                        prefix=scenario.prefix,
                    )
                    runs.append(one)
                    progress(
                        "startup",
                        f"{scenario.name} {index + 1}/{count}: ready "
                        f"{fmt_ms((one.ready_s or float('nan')) * 1000)} ms, first kill "
                        f"{fmt_ms((one.first_kill_s or float('nan')) * 1000)} ms, exit "
                        f"{fmt_ms((one.exit_s or float('nan')) * 1000)} ms {' '.join(one.notes)}",
                    )
    finally:
        with contextlib.suppress(OSError):
            os.unlink(THRASH_FILE)
    times = Table(
        "startup_times",
        "Start-up: exec -> armed -> first kill, and SIGTERM -> exit (ms)",
        [
            "scenario",
            "runs",
            "exec->first log line median",
            "exec->ready median",
            "exec->ready max",
            "since_exec_ms median",
            "exec->first kill median",
            "exec->first kill max",
            "SIGTERM->exit median",
            "SIGTERM->exit max",
        ],
    )
    times.rows.append(
        [
            "baseline: python -c 'import json, asyncio' (exec->exit)",
            str(len(baseline)),
            "-",
            *_summary_cells(list(baseline)),
            "-",
            "-",
            "-",
            "-",
            "-",
        ]
    )
    for scenario in SCENARIOS:
        mine = [r for r in runs if r.scenario == scenario.name]
        times.rows.append(
            [
                scenario.name,
                str(len(mine)),
                _summary_cells([r.first_line_s for r in mine])[0],
                *_summary_cells([r.ready_s for r in mine]),
                _summary_cells([r.since_exec_s for r in mine])[0],
                *_summary_cells([r.first_kill_s for r in mine]),
                *_summary_cells([r.exit_s for r in mine]),
            ]
        )
    times.notes += [
        "exec->first log line: interpreter start, the CLI's imports and the configuration "
        "loaded (daemon.starting). exec->ready: from just before fork/exec to the arrival "
        "of the controller.ready log "
        "line on the pipe; since_exec_ms is the daemon's own figure (/proc/self/stat start "
        "time, 10 ms ticks). Triggers are armed before that line; HTTP, metrics, journal and "
        "hooks start after it.",
        f"Scratch group limit {GROUP_LIMIT >> 20} MiB; the thrasher maps a "
        f"{config.thrash_file_mib} MiB file. First kill waits for the PSI trigger, which "
        "without CAP_SYS_RESOURCE is checked every 2 s.",
        f"Cold: {len(cold)} files (modules, .pyc, shared libraries) evicted from the page "
        "cache with POSIX_FADV_DONTNEED before each exec (pages other processes map stay).",
        "Unit priorities: started as examples/systemd/pressured.service starts it "
        f"({' '.join(UNIT_PRIORITIES)}): the module reads and imports go ahead of the "
        "thrasher's.",
    ]
    imports, import_raw = import_table(pairs)
    closes, close_raw = trigger_close_table(3 if config.smoke else 20)
    section.tables += [times, closes, imports]
    section.raw = {
        "runs": [r.__dict__ for r in runs],
        "baseline_exec_s": baseline,
        "imports": import_raw,
        "trigger_close_ms": close_raw,
        "rusage_self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    _targets(section, runs)
    return section


def _worst(runs: list[StartRun], scenarios: tuple[str, ...], attr: str) -> float | None:
    values: list[float | None] = [getattr(r, attr) for r in runs if r.scenario in scenarios]
    seen = [v for v in values if v is not None]
    if not seen or len(seen) < len(values):
        return None
    return max(seen)


def _targets(section: Section, runs: list[StartRun]) -> None:
    for label, scenarios, attr, limit in (
        ("armed within 0.5 s of exec, quiet (max)", ("quiet",), "ready_s", ARMED_QUIET_S),
        (
            "armed within 3 s of exec beside a thrasher (max)",
            ("beside a thrasher",),
            "ready_s",
            ARMED_THRASH_S,
        ),
        (
            "armed within 3 s of exec, cold beside a thrasher, unit priorities (max)",
            (COLD_UNIT,),
            "ready_s",
            ARMED_THRASH_S,
        ),
        (
            "armed within 3 s of exec, cold beside a thrasher, no priorities (max)",
            (COLD,),
            "ready_s",
            ARMED_THRASH_S,
        ),
        (
            "SIGTERM -> exit within 1 s (max, all scenarios)",
            tuple(scenario.name for scenario in SCENARIOS),
            "exit_s",
            EXIT_S,
        ),
    ):
        worst = _worst(runs, scenarios, attr)
        section.targets.append(
            Target(
                "startup",
                label,
                "-" if worst is None else f"{worst * 1000:.0f} ms",
                None if worst is None else worst <= limit,
            )
        )
