"""Reaction: from a pressure event to SIGKILL sent, with 100 .. 10,000 processes in scope.

A scratch cgroup holds N processes: one spawner (:mod:`benchmarks.sleepers`), sleepers (each
its own process group: its own family), and as many victims as events per chain (the largest
families, ``oom_score_adj`` 1000: the ``oom_score`` policy and the default chain, ``culprit``
then ``oom_score``, both pick them). Each chain is measured in turn on the same processes.
An in-process :class:`~pressured.controller.Controller` on uvloop watches the group (guard
cooldown 0, a high rate limit, mlockall off, JSON logs to /dev/null so logging costs what it
costs in the daemon), and each :class:`~pressured.events.PressureEvent` (``source=MANUAL``) is
fed to ``controller.scopes[0].handle(event)``: snapshot -> policy chain -> guard -> actuator
-> reaper, exactly the path of a PSI event after its callback.

event -> signal = ``event_to_decision_ms + decision_to_signal_ms`` from the kill record, split
by the record's own per-stage timestamps (``stages_ms``): event sinks, the hop to the I/O
thread, the cgroup phase, the process scan, the hop back, ranking, acting.
Baselines, measured in the same run over the same PIDs: one bare ``scan_processes(pids=...)``
(every file of every process), and the floor of any scan: one open + read + close of one
procfs file per process, in Python and in C (``benchmarks/floor.c``, with the C figure for
``pread`` on fds opened in advance: the kernel's own cost of generating the file).

Under real thrashing: the same controller with its real PSI triggers on a scratch group whose
two processes are a page-cache thrasher and a sleeper, repeated; the first kill of each run
is timed from its trigger event (median and max: the tail is the point). Each run twice: the
thrasher started as soon as the controller is armed, and after a quiet spell longer than a
kept stat reading stays usable (``QUIET_S``), as a daemon idle for a while meets its first
episode: its first decision takes the second stat sample the rates need.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from benchmarks.common import Config, Progress, Section, Summary, Table, Target, fmt_ms
from benchmarks.svgplot import loglog_svg

SLEEPERS = Path(__file__).with_name("sleepers.py")
FLOOR_C = Path(__file__).with_name("floor.c")
PLOT = Path(__file__).with_name("results") / "reaction.svg"
TARGETS_MS = {1000: 5.0, 10_000: 25.0}
FLOOR_FILE = "oom_score"  # the one file the oom_score policy skims
CHAINS: dict[str, list[dict[str, Any]] | None] = {
    "oom_score": [{"name": "oom_score"}],
    "default": None,  # the configuration's default chain: culprit, then oom_score
}
CHAIN_LABELS = {"oom_score": "oom_score", "default": "default chain: culprit, oom_score"}
EVENT_GAP_S = 0.25
"""Between events: a PSI trigger fires at most once per window (>= 0.5 s), and rate policies
take their rates against the previous event's reading once it is at least 0.1 s old."""
THRASH_RUNS = 6
THRASH_FILE = "/var/tmp/pressured-bench-reaction-thrash.bin"
QUIET_S = 6.0
"""Longer than a kept stat reading stays usable for rates (5 s, pressured.scan.plan)."""
STAGE_SPANS = (
    ("event sinks", "handling", "emitted"),
    ("hop to I/O thread", "emitted", "scan_start"),
    ("cgroup phase", "scan_start", "cgroups_read"),
    ("process scan", "cgroups_read", "scan_end"),
    ("hop back", "scan_end", "snapshot"),
    ("ranking (policy + guard)", "snapshot", "decided"),
)


@dataclass
class EventTiming:
    processes: int
    event_to_signal_ms: float
    before_scan_ms: float
    snapshot_ms: float
    scan_ms: float
    rank_ms: float
    act_ms: float
    scanned: int
    victim_pid: int | None
    victim_was_planted: bool
    result: str
    skimmed: int = 0
    stages: dict[str, float] | None = None


def _read_ready(stdout: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    buffer = b""
    while b"ready" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"sleepers not ready within {timeout_s} s")
        readable, _, _ = select.select([stdout], [], [], remaining)
        if readable:
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("sleeper spawner exited before ready")
            buffer += chunk
    first = buffer.split(b"\n", 1)[0]
    info: dict[str, Any] = json.loads(first)
    return info


def _settings(cgroup: str, memcg: str | None, chain: str = "oom_score") -> Any:
    from pressured.config import validate_settings

    scope: dict[str, Any] = {"cgroup": cgroup}
    policies = CHAINS[chain]
    if policies is not None:
        scope["policies"] = policies
    if memcg:
        scope["memcg_v1"] = memcg
    return validate_settings(
        {
            "daemon": {"mlockall": False, "oom_score_adj": None},
            "metrics": {"enabled": False},
            "guard": {"cooldown_ms": 0, "max_kills_per_minute": 1_000_000},
            "scopes": [scope],
        }
    )


async def _drive(
    settings: Any,
    processes: int,
    events: int,
    planted: set[int],
    progress: Callable[[str], None],
) -> list[EventTiming]:
    from pressured.controller import Controller
    from pressured.events import EventSource, PressureEvent

    timings: list[EventTiming] = []
    async with Controller(settings) as controller:
        runner = controller.scopes[0]
        marks: dict[str, int] = {}
        take_snapshot: Callable[[Any, Any], Awaitable[Any]] = runner.take_snapshot
        decide: Callable[..., Awaitable[Any]] = runner.chain.decide

        async def timed_snapshot(event: Any, plan: Any) -> Any:
            marks["snapshot_start"] = time.monotonic_ns()
            snapshot = await take_snapshot(event, plan)
            marks["snapshot_end"] = time.monotonic_ns()
            marks["scan"] = snapshot.scan_duration_ns
            marks["scanned"] = len(snapshot.processes)
            marks["skimmed"] = snapshot.skimmed
            return snapshot

        async def timed_decide(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic_ns()
            result = await decide(*args, **kwargs)
            marks["rank"] = time.monotonic_ns() - start
            return result

        # The scope opens its skim files once its triggers are armed (pressured.scan.kept):
        # events are measured after that start-up step, as a running daemon meets them.
        warm_until = time.monotonic() + 30
        plan = runner.scan_stages()[0]
        files = len(plan.skim_files) if plan is not None else 1
        # The fds its kept files will hold: one per process and file, within the fd budget.
        wanted = 0.9 * min(processes * files, runner.kept_skims.max_fds)
        # The scope signals nothing when its warm-up ends: poll its fd count (harness only).
        while runner.kept_skims.open_fds < wanted and time.monotonic() < warm_until:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        # Instance attributes shadow the methods: the scope calls our wrappers.
        setattr(runner, "take_snapshot", timed_snapshot)  # noqa: B010
        setattr(runner.chain, "decide", timed_decide)  # noqa: B010
        for index in range(events):
            await asyncio.sleep(EVENT_GAP_S)  # not timed: events are timed from creation
            marks.clear()
            event = PressureEvent(scope=runner.name, level="some", source=EventSource.MANUAL)
            record = await runner.handle(event)
            if record is None or record.event_to_decision_ms is None:
                raise RuntimeError(f"event {index}: no kill (record {record})")
            to_decision = record.event_to_decision_ms
            to_signal = record.decision_to_signal_ms or 0.0
            timing = EventTiming(
                processes=processes,
                event_to_signal_ms=to_decision + to_signal,
                before_scan_ms=(marks["snapshot_start"] - event.monotonic_ns) / 1e6,
                snapshot_ms=(marks["snapshot_end"] - marks["snapshot_start"]) / 1e6,
                scan_ms=marks["scan"] / 1e6,
                rank_ms=marks["rank"] / 1e6,
                act_ms=to_signal,
                scanned=marks["scanned"],
                victim_pid=record.pid,
                victim_was_planted=record.pid in planted,
                result=str(record.result),
                skimmed=marks["skimmed"],
                stages=dict(record.stages_ms),
            )
            timings.append(timing)
            progress(
                f"{processes} processes, event {index + 1}/{events}: event->signal "
                f"{fmt_ms(timing.event_to_signal_ms)} ms (scan {fmt_ms(timing.scan_ms)} ms, "
                f"{timing.skimmed} skimmed, {timing.scanned} read in full)"
            )
    return timings


def _baseline(pids: list[int], repetitions: int) -> list[float]:
    from pressured.kernel import procfs

    samples = []
    for _ in range(repetitions):
        started = time.perf_counter_ns()
        procfs.scan_processes(pids=pids)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


def _floor_python(pids: list[int], repetitions: int) -> list[float]:
    """ms for one open + read + close of FLOOR_FILE per process: the cheapest scan there is."""
    samples = []
    paths = [f"/proc/{pid}/{FLOOR_FILE}" for pid in pids]
    for _ in range(repetitions):
        started = time.perf_counter_ns()
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.read(fd, 128)
            except OSError:
                pass
            finally:
                os.close(fd)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


_FLOOR_BINARY: dict[str, Path] = {}  # compiled once per run


def _floor_c(pids: list[int], repetitions: int) -> tuple[list[float], list[float]] | None:
    """(open+read+close ms, pread-on-kept-fds ms) per repetition from benchmarks/floor.c, or
    None where no C compiler is present."""
    import atexit
    import shutil
    import subprocess
    import tempfile

    if "floor" not in _FLOOR_BINARY:
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            return None
        workdir = tempfile.mkdtemp(prefix="pressured-floor-")
        atexit.register(shutil.rmtree, workdir, True)  # the binary goes when the suite ends
        target = Path(workdir) / "floor"
        built = subprocess.run(
            [compiler, "-O2", "-o", str(target), str(FLOOR_C)], capture_output=True, check=False
        )
        if built.returncode != 0:
            return None
        _FLOOR_BINARY["floor"] = target
    done = subprocess.run(
        [str(_FLOOR_BINARY["floor"]), FLOOR_FILE, str(repetitions)],
        input="\n".join(map(str, pids)).encode(),
        capture_output=True,
        check=True,
    )
    rows = [line.split() for line in done.stdout.decode().splitlines() if line.strip()]
    return [float(row[0]) for row in rows], [float(row[1]) for row in rows]


def _slab_bytes() -> int:
    """Bytes in every slab cache (active objects x object size), from /proc/slabinfo."""
    total = 0
    with open("/proc/slabinfo", encoding="ascii") as handle:
        for line in handle:
            fields = line.split()
            if len(fields) > 3 and fields[1].isdigit() and fields[3].isdigit():
                total += int(fields[1]) * int(fields[3])
    return total


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _kept_state_cost(pids: list[int]) -> dict[str, float]:
    """What the state kept between events costs at this size: kernel memory of one kept
    oom_score fd per process (slab delta, median of 3) and our RSS growth for the table."""
    from pressured.scan.kept import KeptSkim

    deltas, rss = [], []
    for _ in range(3):
        kept = KeptSkim(FLOOR_FILE, max_fds=len(pids) + 16)
        slab, resident = _slab_bytes(), _rss_bytes()
        kept.skim("/proc", pids, FLOOR_FILE)
        deltas.append(_slab_bytes() - slab)
        rss.append(_rss_bytes() - resident)
        kept.close()
    return {
        "kept_fds": len(pids),
        "kernel_bytes": Summary.of(deltas).median,
        "rss_bytes": Summary.of(rss).median,
    }


PROC_FILES = ("stat", "status", "cmdline", "oom_score", "oom_score_adj", "cgroup")


def _file_costs(pids: list[int]) -> dict[str, float]:
    """Microseconds per process to open, read and close each file a scan reads (the floor
    of any scan that reads it), one pass over every PID per file."""
    costs = {}
    for name in PROC_FILES:
        started = time.perf_counter_ns()
        for pid in pids:
            try:
                fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                os.read(fd, 65536)
            except OSError:
                pass
            finally:
                os.close(fd)
        costs[name] = (time.perf_counter_ns() - started) / 1e3 / max(1, len(pids))
    return costs


@dataclass
class Floors:
    python: list[float]
    c_open: list[float] | None
    c_pread: list[float] | None
    state: dict[str, float] | None = None


def one_size(
    processes: int, config: Config, progress: Progress
) -> tuple[dict[str, list[EventTiming]], list[float], int, dict[str, float], Floors]:
    from pressured.loops import LOOP_FACTORIES
    from pressured.testing.scratch import ScratchGroup

    events = config.reaction_events
    chains = config.reaction_chains
    sleepers = processes - events * len(chains) - 1  # the spawner counts as one in scope
    if sleepers < 0:
        raise ValueError(f"{processes} processes cannot hold {events} victims")
    name = f"pressured-bench-reaction-{uuid.uuid4().hex[:8]}"
    with ScratchGroup(None, name=name) as group:
        started = time.monotonic()
        spawner = group.spawn(
            [sys.executable, str(SLEEPERS), str(sleepers), str(events * len(chains))]
        )
        info = _read_ready(spawner.stdout, 120)
        in_scope = len(group.group.all_members())
        progress(
            "reaction",
            f"{in_scope} processes in scope, spawned in {time.monotonic() - started:.1f} s",
        )
        members = group.group.all_members()
        baseline = _baseline(members, events)
        costs = _file_costs(members)
        c_floor = _floor_c(members, events)
        floors = Floors(
            _floor_python(members, events),
            c_floor[0] if c_floor else None,
            c_floor[1] if c_floor else None,
            _kept_state_cost(members),
        )
        by_chain: dict[str, list[EventTiming]] = {}
        for chain in chains:
            settings = _settings(group.path, group.memcg_path, chain)

            def say(message: str, chain: str = chain) -> None:
                progress("reaction", f"[{chain}] {message}")

            with asyncio.Runner(loop_factory=LOOP_FACTORIES["uvloop"]) as runner:
                by_chain[chain] = runner.run(
                    _drive(
                        settings,
                        len(group.group.all_members()),
                        events,
                        set(info["victims"]),
                        say,
                    )
                )
    return by_chain, baseline, in_scope, costs, floors


# -- under real thrashing ----------------------------------------------------------------------
@dataclass
class ThrashKill:
    event_to_decision_ms: float
    decision_to_signal_ms: float
    scan_read: int | None
    stages: dict[str, float]
    victim_was_thrasher: bool
    quiet_s: float = 0.0


async def _one_thrash_run(group: Any, thrash_file: str, quiet_s: float) -> ThrashKill:
    from pressured.config import validate_settings
    from pressured.controller import Controller
    from pressured.events import KillRecord
    from pressured.testing.scratch import evict_from_cache

    scope: dict[str, Any] = {"cgroup": group.path, "starvation_check_s": 0}
    if group.memcg_path:
        scope["memcg_v1"] = group.memcg_path
    settings = validate_settings(
        {
            "daemon": {"mlockall": False, "oom_score_adj": None},
            "metrics": {"enabled": False},
            "watchdog": {"enabled": False},
            "guard": {"cooldown_ms": 0},
            "scopes": [scope],
        }
    )
    async with Controller(settings) as controller:
        await asyncio.sleep(quiet_s)
        evict_from_cache(thrash_file)
        thrasher = group.spawn_workload("thrash", thrash_file, wait_ready=False)
        group.spawn_workload("sleep", wait_ready=False)
        async with asyncio.timeout(60):
            async for item in controller.events():
                if isinstance(item, KillRecord):
                    return ThrashKill(
                        event_to_decision_ms=item.event_to_decision_ms or 0.0,
                        decision_to_signal_ms=item.decision_to_signal_ms or 0.0,
                        scan_read=item.scan_read,
                        stages=dict(item.stages_ms),
                        victim_was_thrasher=item.pid == thrasher.pid,
                        quiet_s=quiet_s,
                    )
    raise RuntimeError("the controller stopped before a kill")


def thrash_runs(config: Config, progress: Progress) -> list[ThrashKill]:
    """Real PSI triggers on a thrashing scratch group of two processes, ``THRASH_RUNS`` times
    each way (at once, and after ``QUIET_S``), interleaved."""
    from pressured.loops import LOOP_FACTORIES
    from pressured.testing.scratch import ScratchGroup, make_thrash_file

    runs = 1 if config.smoke else THRASH_RUNS
    make_thrash_file(THRASH_FILE, config.thrash_file_mib << 20)
    kills = []
    try:
        for index in range(runs):
            for quiet_s in (0.0, QUIET_S):
                with (
                    ScratchGroup(config.episode_limit_mib << 20) as group,
                    asyncio.Runner(loop_factory=LOOP_FACTORIES["uvloop"]) as runner,
                ):
                    kill = runner.run(_one_thrash_run(group, THRASH_FILE, quiet_s))
                kills.append(kill)
                progress(
                    "reaction",
                    f"thrash run {index + 1}/{runs} after {quiet_s:g} s quiet: event->signal "
                    f"{fmt_ms(kill.event_to_decision_ms + kill.decision_to_signal_ms)} ms",
                )
    finally:
        Path(THRASH_FILE).unlink(missing_ok=True)
    return kills


def _thrash_rows(table: Table, kills: list[ThrashKill], quiet_s: float) -> None:
    """Median and max rows of the real-thrash runs that started after ``quiet_s``."""
    if not kills:
        return
    columns = [
        [k.event_to_decision_ms for k in kills],
        [k.decision_to_signal_ms for k in kills],
        [k.event_to_decision_ms + k.decision_to_signal_ms for k in kills],
        *(
            [v for k in kills if (v := _span(k.stages, start, end)) is not None]
            for _name, start, end in STAGE_SPANS
        ),
    ]
    when = "at once" if not quiet_s else f"after {quiet_s:g} s quiet"
    for label, pick in (("median", "median"), ("max", "max")):
        table.rows.append(
            [
                f"{when}: {label} of {len(kills)}",
                *(fmt_ms(getattr(Summary.of(c), pick)) if c else "-" for c in columns),
            ]
        )


def _split_row(label: str, timings: list[EventTiming]) -> list[str]:
    """One row of the per-stage table: median ms and share of the mean total per stage."""
    mean_total = sum(t.event_to_signal_ms for t in timings) / len(timings)

    def part(values: list[float]) -> str:
        median = Summary.of(values).median
        share = 100 * (sum(values) / len(values)) / mean_total if mean_total else 0.0
        return f"{fmt_ms(median)} ({share:.0f} %)"

    spans = []
    for _name, start, end in STAGE_SPANS:
        values = [v for t in timings if (v := _span(t.stages, start, end)) is not None]
        spans.append(part(values) if values else "-")
    return [
        label,
        f"{Summary.of([t.skimmed for t in timings]).median:,.0f} / "
        f"{Summary.of([t.scanned for t in timings]).median:,.0f}",
        *spans,
        part([t.act_ms for t in timings]),
        fmt_ms(mean_total),
    ]


def _span(stages: dict[str, float] | None, start: str, end: str) -> float | None:
    if not stages or start not in stages or end not in stages:
        return None
    return stages[end] - stages[start]


@contextlib.contextmanager
def _logs_to(stream: TextIO) -> Iterator[None]:
    """pressured's in-process log lines go to ``stream`` inside the block, and to stderr after
    it: a later section's warning must not be printed to a file this one has closed (a cmdline
    read timing out in the victims section under CI load crashed the suite that way)."""
    from pressured.logs import configure_logging

    configure_logging("json", "info", stream=stream)
    try:
        yield
    finally:
        configure_logging("json", "info", stream=sys.stderr)


def run(config: Config, progress: Progress) -> Section:
    from pressured.testing.scratch import scratch_unavailable_reason

    section = Section("reaction")
    main = Table(
        "reaction",
        "Reaction: pressure event -> SIGKILL sent (ms)",
        [
            "processes in scope",
            "events",
            "min",
            "p50",
            "p99",
            "max",
            "baseline: one scan_processes p50",
            "baseline p99",
            "p50 vs baseline",
        ],
    )
    split = Table(
        "reaction_split",
        "Where event -> SIGKILL goes, by the kill record's stage timestamps (median ms, and "
        "share of the mean total)",
        [
            "processes in scope",
            "records read (skimmed / in full)",
            *(name for name, _a, _b in STAGE_SPANS),
            "pidfd + reaper hop + signal",
            "total (mean)",
        ],
    )
    state = Table(
        "reaction_state",
        "State kept between events: one open skim fd per process in scope",
        ["processes in scope", "kept fds", "kernel memory (slab)", "per process", "our RSS"],
    )
    thrash = Table(
        "reaction_thrash",
        "Under real thrashing: trigger event -> SIGKILL sent, 2 processes in scope (ms)",
        [
            "statistic",
            "event -> decision",
            "decision -> signal",
            "event -> signal",
            *(name for name, _a, _b in STAGE_SPANS),
        ],
    )
    files = Table(
        "reaction_files",
        "Baseline: the cost of each procfs file a process record is built from (µs per process)",
        ["processes in scope", *PROC_FILES, "sum", "scan_processes per process"],
    )
    section.tables += [main, split, files, state, thrash]
    summaries: dict[int, tuple[Summary, Summary, list[EventTiming]]] = {}
    floors_by_size: dict[int, Floors] = {}
    reason = scratch_unavailable_reason()
    if reason is not None:
        section.skipped = reason
        main.notes.append(f"skipped: {reason}")
        _targets(section, {})
        return section
    p99s: dict[tuple[str, int], float] = {}
    curves: dict[str, list[tuple[float, float]]] = {}
    with open(os.devnull, "w", encoding="utf-8") as devnull, _logs_to(devnull):
        for processes in config.reaction_sizes:
            by_chain, baseline, in_scope, costs, floors = one_size(processes, config, progress)
            floors_by_size[in_scope] = floors
            section.raw[str(processes)] = {
                "in_scope": in_scope,
                "events": {chain: [asdict(t) for t in ts] for chain, ts in by_chain.items()},
                "baseline_scan_ms": baseline,
                "file_us_per_process": costs,
                "floor_python_ms": floors.python,
                "floor_c_open_ms": floors.c_open,
                "floor_c_pread_ms": floors.c_pread,
                "kept_state": floors.state,
            }
            if floors.state:
                state.rows.append(
                    [
                        f"{in_scope:,}",
                        f"{floors.state['kept_fds']:,.0f}",
                        f"{floors.state['kernel_bytes'] / 2**20:.1f} MiB",
                        f"{floors.state['kernel_bytes'] / max(1, in_scope) / 1024:.2f} KiB",
                        f"{floors.state['rss_bytes'] / 2**20:.2f} MiB",
                    ]
                )
            curves.setdefault("scan_processes p50", []).append(
                (in_scope, Summary.of(baseline).median)
            )
            curves.setdefault("floor Python p50", []).append(
                (in_scope, Summary.of(floors.python).median)
            )
            if floors.c_open and floors.c_pread:
                curves.setdefault("floor C p50", []).append(
                    (in_scope, Summary.of(floors.c_open).median)
                )
                curves.setdefault("floor C kept fds p50", []).append(
                    (in_scope, Summary.of(floors.c_pread).median)
                )
            per_process = Summary.of(baseline).median * 1000 / max(1, in_scope)
            files.rows.append(
                [
                    f"{in_scope:,}",
                    *(f"{costs[name]:.1f}" for name in PROC_FILES),
                    f"{sum(costs.values()):.1f}",
                    f"{per_process:.1f}",
                ]
            )
            base = Summary.of(baseline)
            for chain, timings in by_chain.items():
                label = (
                    f"{in_scope:,}"
                    if chain == "oom_score"
                    else f"{in_scope:,} ({CHAIN_LABELS[chain]})"
                )
                totals = Summary.of([t.event_to_signal_ms for t in timings])
                curves.setdefault(f"{chain} p50", []).append((in_scope, totals.median))
                curves.setdefault(f"{chain} p99", []).append((in_scope, totals.p99))
                if chain == config.reaction_chains[0]:
                    summaries[in_scope] = (totals, base, timings)
                p99s[(chain, processes)] = totals.p99
                main.rows.append(
                    [
                        label,
                        str(totals.n),
                        fmt_ms(totals.min),
                        fmt_ms(totals.median),
                        fmt_ms(totals.p99),
                        fmt_ms(totals.max),
                        fmt_ms(base.median),
                        fmt_ms(base.p99),
                        f"{totals.median / base.median:.2f}x" if base.median else "-",
                    ]
                )
                split.rows.append(_split_row(label, timings))
                planted = sum(t.victim_was_planted for t in timings)
                if planted != len(timings):
                    main.notes.append(
                        f"{in_scope:,} processes, {chain}: {len(timings) - planted} event(s) "
                        "killed a sleeper instead of a planted victim"
                    )
            totals = summaries[in_scope][0]
            floor_rows = [
                (f"floor: open+read+close of {FLOOR_FILE}, Python", floors.python),
                (f"floor: open+read+close of {FLOOR_FILE}, C", floors.c_open),
                (f"floor: pread of {FLOOR_FILE} on kept fds, C", floors.c_pread),
            ]
            for label, samples in floor_rows:
                if not samples:
                    continue
                floor = Summary.of(samples)
                main.rows.append(
                    [
                        f"{in_scope:,} ({label})",
                        str(floor.n),
                        fmt_ms(floor.min),
                        fmt_ms(floor.median),
                        fmt_ms(floor.p99),
                        fmt_ms(floor.max),
                        "-",
                        "-",
                        f"{totals.median / floor.median:.2f}x" if floor.median else "-",
                    ]
                )
        kills = thrash_runs(config, progress)
    section.raw["thrash"] = [asdict(kill) for kill in kills]
    for quiet_s in (0.0, QUIET_S):
        _thrash_rows(thrash, [k for k in kills if k.quiet_s == quiet_s], quiet_s)
    if kills:
        wrong = sum(not k.victim_was_thrasher for k in kills)
        thrash.notes.append(
            f"{len(kills)} runs, each a fresh {config.episode_limit_mib} MiB scratch group "
            f"holding a page-cache thrasher ({config.thrash_file_mib} MiB file) and a sleeper, "
            "watched by an in-process Controller with its default triggers (unprivileged: 2 s "
            "windows) and policy; the first kill of each run, timed from its real trigger "
            f"event by the kill record. Victim was the thrasher in {len(kills) - wrong} of "
            f"{len(kills)} runs."
        )
        thrash.notes.append(
            f"'at once': the thrasher starts as the controller is armed, so the stat reading "
            f"kept from arming serves the rates. 'after {QUIET_S:g} s quiet': it starts later "
            "than that reading stays usable (5 s), as with a daemon that idled before the "
            "episode (the usual case): the first decision reads everyone's stat a second "
            "time after the 100 ms the rates need (the process scan column)."
        )
    if curves:
        plot_path = PLOT.with_name("reaction.smoke.svg") if config.smoke else PLOT
        loglog_svg(
            plot_path,
            "Reaction: event -> SIGKILL vs processes in scope",
            "processes in scope",
            "ms",
            [(label, values) for label, values in curves.items()],
        )
        main.notes.append(
            f"![event -> SIGKILL p50/p99 against processes, log scale, beside the baselines]"
            f"(benchmarks/results/{plot_path.name})"
        )
    main.notes += [
        "In-process Controller on uvloop watching a scratch cgroup of `sleep` processes (plus "
        "their spawner), each in its own process group, with the `oom_score` policy, then "
        "with the default chain (`culprit`, then `oom_score`); each event kills one planted "
        "victim (the largest family, oom_score_adj 1000), events 0.25 s apart (untimed). "
        "event -> signal = event_to_decision_ms + decision_to_signal_ms "
        "of the kill record. Logging is on (JSON to /dev/null), as in the daemon. Events "
        "start once the scope has opened its skim files (its start-up step after arming); "
        "the fresh-open floor rows show what a first scan without them pays.",
        "Baseline: the same number of bare `pressured.kernel.procfs.scan_processes(pids=...)` "
        "calls over the same PIDs on this thread, with no controller around it.",
        f"Floor rows: the cheapest possible scan, one open + read + close of /proc/PID/"
        f"{FLOOR_FILE} per process (the file the oom_score policy skims), in Python and in C "
        "(benchmarks/floor.c), and pread on fds opened in advance (the kernel generating the "
        "file, nothing else); the last column is pressured's p50 over the floor's p50.",
    ]
    state.notes.append(
        "Measured beside the run: a KeptSkim over the same PIDs, slab bytes (/proc/slabinfo, "
        "active objects x size) and this process's RSS before and after its first skim, "
        "median of 3. The kernel keeps one file, its seq_file and a one-page buffer per "
        "kept fd. The only other state between events is the command-line cache (bounded to "
        "1 MiB, finalists only) and the stuck-reader list (at most 4 threads)."
    )
    split.notes.append(
        "From the kill record's stages_ms: event sinks = the pressure.event line and "
        "subscribers; hop to I/O thread = run_in_executor until the scan starts; cgroup "
        "phase = meminfo, the member walk and cgroup records; process scan = the skim of "
        "every process plus full records for the finalists; hop back = until the loop has "
        "the snapshot; ranking = the policy chain with guard checks; last: pidfd open, "
        "start-time check, the policy.decided log line, the reaper-thread hop and "
        "pidfd_send_signal (decision_to_signal_ms)."
    )
    files.notes.append(
        "open + read + close of /proc/PID/<file> for every PID of the scope, timed per file: "
        "what any scan that reads these six files pays in system calls before parsing "
        "anything. The last column is the bare scan_processes baseline divided by the "
        "number of processes."
    )
    _targets(section, p99s)
    section.notes += reading(summaries, floors_by_size)
    return section


def reading(
    summaries: dict[int, tuple[Summary, Summary, list[EventTiming]]],
    floors: dict[int, Floors],
) -> list[str]:
    if not summaries:
        return []
    parts = ", ".join(
        f"{fmt_ms(total.median)} ms at {n:,}" for n, (total, _b, _t) in sorted(summaries.items())
    )
    biggest = max(summaries)
    total, base, timings = summaries[biggest]
    scan_share = 100 * sum(t.scan_ms for t in timings) / sum(t.event_to_signal_ms for t in timings)
    floor = floors.get(biggest)
    against = ""
    if floor is not None and floor.c_open and floor.c_pread:
        against = (
            f" The cheapest scan that opens one file per process takes "
            f"{fmt_ms(Summary.of(floor.c_open).median)} ms there even in C, and pread on fds "
            f"kept open {fmt_ms(Summary.of(floor.c_pread).median)} ms: pressured's whole "
            f"event -> SIGKILL p50 is {total.median / Summary.of(floor.c_open).median:.2f}x "
            "the first and "
            f"{total.median / Summary.of(floor.c_pread).median:.2f}x the second."
        )
    return [
        f"Reaction: event -> SIGKILL p50 is {parts} processes, against "
        f"{fmt_ms(base.median)} ms for one bare full scan (scan_processes) at {biggest:,}. "
        "The scan skims one number per process (oom_score, from fds kept open between "
        "events) and reads full records only for the finalists; at "
        f"{biggest:,} processes the scan is still {scan_share:.0f} % of the time, nearly all "
        f"of it the kernel generating one small file per process.{against}",
    ]


def _targets(section: Section, p99s: dict[tuple[str, int], float]) -> None:
    for chain in CHAINS:
        for processes, limit in TARGETS_MS.items():
            text = (
                f"Reaction p99 <= {limit:g} ms with {processes:,} processes in scope "
                f"({CHAIN_LABELS[chain]})"
            )
            if (chain, processes) not in p99s:
                section.targets.append(Target("reaction", text, "-", None))
                continue
            value = p99s[(chain, processes)]
            section.targets.append(Target("reaction", text, f"{fmt_ms(value)} ms", value <= limit))


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.reaction``: the event drive alone, at chosen sizes and chains
    (no baselines, no thrash runs), printed with the machine's load."""
    import argparse
    import dataclasses

    parser = argparse.ArgumentParser(prog="python -m benchmarks.reaction", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--chains", nargs="+", choices=sorted(CHAINS), default=list(CHAINS))
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args(argv)
    config = dataclasses.replace(
        Config(), reaction_events=args.events, reaction_chains=tuple(args.chains)
    )
    with open(os.devnull, "w", encoding="utf-8") as devnull, _logs_to(devnull):
        for processes in args.sizes:
            by_chain, _baseline, in_scope, _costs, _floors = one_size(processes, config, Progress())
            with open("/proc/loadavg", encoding="ascii") as handle:
                load = " ".join(handle.read().split()[:3])
            for chain, timings in by_chain.items():
                totals = Summary.of([t.event_to_signal_ms for t in timings])
                read = Summary.of([t.scanned for t in timings]).median
                print(
                    f"{in_scope:>6,} processes  {CHAIN_LABELS[chain]:<34} p50 "
                    f"{fmt_ms(totals.median):>8} ms  p99 {fmt_ms(totals.p99):>8} ms  max "
                    f"{fmt_ms(totals.max):>8} ms  read in full {read:,.0f}  load {load}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
