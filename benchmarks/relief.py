"""Relief: from SIGKILL to the victim's memory being free again.

Each victim is a ``hog`` workload (touched anonymous memory) alone in its own scratch cgroup
with no limit, pinned to the last CPU. Three ways to kill it:

* ``kill only`` (baseline): SIGKILL through a pidfd, then wait for the kernel's exit path;
* ``bare floor``: :func:`bare_kill_and_mrelease` below, written independently of pressured:
  ``pidfd_send_signal`` then ``syscall(448)`` back to back via ctypes on this thread;
* ``pressured``: ``kill_and_reap`` with a :class:`~pressured.reaper.Reaper` pinned to CPU 0.

Conditions: ``normal``, and ``starved``: by default (``--starve idle``) the victim at
SCHED_IDLE beside a busy loop pinned to its CPU; with ``--starve quota`` in a new v1 cpu
cgroup with ``cpu.cfs_quota_us = 1000`` of ``cfs_period_us = 100000`` (1 % of a CPU). The
default run also times a few quota-starved victims, because on Linux 6.18 a CFS quota no
longer starves a task that dies in the kernel (bandwidth throttling moved to the return to
user space), which is evidence worth keeping beside the table.

"Memory freed" is read from the victim's v1 memcg ``memory.usage_in_bytes``, polled every
~1 ms by a thread of this process: the first sample at or below the level before the victim
started, plus the page cache it brought in (files stay cached after any death), plus a slack
of 1 % of its size (page tables go only at exit) and 40 MiB (one mmu_gather batch the dying
victim may have unmapped itself and frees only when it next runs; measured and reported).
Kill-only waits are capped (``cap_s``) and reported as ``>cap (x % freed)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    GIB,
    MIB,
    Config,
    Progress,
    Section,
    Summary,
    Table,
    Target,
    fmt_ms,
    fmt_ratio,
    kill_quietly,
    pinned,
)

METHODS = ("kill_only", "floor", "pressured")
METHOD_NAMES = {
    "kill_only": "kill only (baseline)",
    "floor": "bare kill+mrelease (floor)",
    "pressured": "pressured kill_and_reap",
}
CONDITION_NAMES = {
    "normal": "normal",
    "idle": "starved: SCHED_IDLE + busy loop",
    "quota": "starved: 1 % CPU quota",
}
POLL_S = 0.001
GATHER_SLACK = 40 * MIB
"""A dying victim that ran a little may hold up to one mmu_gather batch (10,000 pages) that it
unmapped itself but frees only when it next runs: mrelease cannot take those pages back."""
SYS_PROCESS_MRELEASE = 448

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def bare_kill_and_mrelease(pidfd: int) -> int:
    """The floor: SIGKILL then process_mrelease, nothing in between. Returns 0 or errno."""
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    ctypes.set_errno(0)
    result = _libc.syscall(
        ctypes.c_long(SYS_PROCESS_MRELEASE), ctypes.c_int(pidfd), ctypes.c_uint(0)
    )
    return 0 if result == 0 else ctypes.get_errno()


@dataclass
class Trial:
    size_mib: int
    condition: str
    method: str
    rep: int
    freed_ms: float | None
    """None: not freed within the cap."""
    freed_fraction: float
    mrelease: str | None
    """``reaped`` / ``gone`` (ESRCH) / another status, None for kill only."""
    reaper_signal_to_reaped_ms: float | None = None
    signal_to_exit_ms: float | None = None
    usage_at_kill: int = 0
    usage_before: int = 0
    left_after_call: int | None = None
    """Floor only: bytes still charged (above the level before) right after mrelease returned."""


class FreedWatcher(threading.Thread):
    """Polls a memcg usage file every ~1 ms until it is at or below ``target`` bytes."""

    def __init__(self, usage_path: Path, target: int, cap_s: float) -> None:
        super().__init__(name="bench-freed-watcher", daemon=True)
        self.fd = os.open(usage_path, os.O_RDONLY | os.O_CLOEXEC)
        self.target = target
        self.cap_ns = int(cap_s * 1e9)
        self.t0_ns: int | None = None
        self.freed_ns: int | None = None
        self.last_usage = self.read()
        self._stop_requested = threading.Event()

    def read(self) -> int:
        return int(os.pread(self.fd, 64, 0))

    def run(self) -> None:
        try:
            while not self._stop_requested.is_set():
                usage = self.read()
                now = time.monotonic_ns()
                self.last_usage = usage
                t0 = self.t0_ns
                if t0 is not None:
                    if usage <= self.target:
                        self.freed_ns = now
                        return
                    if now - t0 > self.cap_ns:
                        return
                time.sleep(POLL_S)
        finally:
            os.close(self.fd)

    def start_clock(self) -> None:
        self.t0_ns = time.monotonic_ns()

    def stop(self) -> None:
        self._stop_requested.set()


def _memcg_stat(directory: Path) -> dict[str, int]:
    stat: dict[str, int] = {}
    for line in (directory / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            stat[key] = int(value)
    return stat


class CpuStarvation:
    """Starve one process of CPU: a v1 cpu cgroup at 1 % quota, or SCHED_IDLE beside a busy
    loop pinned to the same CPU. ``release()`` lifts it so a dying victim can finish."""

    def __init__(self, mode: str, cpu: int) -> None:
        from pressured.kernel import cgroupfs

        self.mode = mode
        self.cpu = cpu
        self.directory: Path | None = None
        self.busy: subprocess.Popen[bytes] | None = None
        if mode == "quota":
            layout = cgroupfs.discover_layout()
            self.directory = layout.v1_dir("cpu", f"/pressured-bench-starve-{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> CpuStarvation:
        if self.directory is not None:
            self.directory.mkdir()
            (self.directory / "cpu.cfs_period_us").write_text("100000")
            (self.directory / "cpu.cfs_quota_us").write_text("1000")
        else:
            code = f"import os\nos.sched_setaffinity(0, {{{self.cpu}}})\nwhile True:\n    pass\n"
            self.busy = subprocess.Popen([sys.executable, "-c", code])
        return self

    def add(self, pid: int) -> None:
        if self.directory is not None:
            (self.directory / "cgroup.procs").write_text(str(pid))
        else:
            os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))

    def release(self) -> None:
        if self.directory is not None:
            with contextlib.suppress(OSError):
                (self.directory / "cpu.cfs_quota_us").write_text("-1")
        if self.busy is not None:
            self.busy.kill()
            self.busy.wait()
            self.busy = None

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        if self.directory is not None and self.directory.exists():
            for _attempt in range(200):
                try:
                    self.directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int]:
    fd = os.pidfd_open(pid)
    try:
        yield fd
    finally:
        os.close(fd)


def one_trial(
    size_mib: int,
    condition: str,
    method: str,
    rep: int,
    *,
    config: Config,
    runner: asyncio.Runner,
    reaper: Any,
    victim_cpu: int,
) -> Trial:
    from pressured.reap import kill_and_reap
    from pressured.testing.scratch import ScratchGroup

    cap_s = config.relief_cap_s
    name = f"pressured-bench-relief-{uuid.uuid4().hex[:8]}"
    with ScratchGroup(None, name=name) as group:
        if group.memcg_dir is None:
            raise RuntimeError("relief needs a v1 memcg (hybrid host) to read usage from")
        usage_path = group.memcg_dir / "memory.usage_in_bytes"
        usage_before = int(usage_path.read_text())
        cache_before = _memcg_stat(group.memcg_dir).get("total_cache", 0)
        proc = group.spawn_workload("hog", str(size_mib), timeout_s=180)
        os.sched_setaffinity(proc.pid, {victim_cpu})
        starvation = (
            CpuStarvation(condition, victim_cpu)
            if condition in ("idle", "quota")
            else contextlib.nullcontext()
        )
        with starvation as starve, _pidfd(proc.pid) as fd:
            if isinstance(starve, CpuStarvation):
                starve.add(proc.pid)
                time.sleep(0.05)  # let the throttling take hold
            cache_now = _memcg_stat(group.memcg_dir).get("total_cache", 0)
            slack = size_mib * MIB // 100 + GATHER_SLACK
            target = usage_before + max(0, cache_now - cache_before) + slack
            watcher = FreedWatcher(usage_path, target, cap_s)
            usage_at_kill = watcher.last_usage
            watcher.start()
            mrelease: str | None = None
            left_after_call: int | None = None
            reaped_ms: float | None = None
            exit_ms: float | None = None
            try:
                if method == "kill_only":
                    watcher.start_clock()
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                elif method == "floor":
                    watcher.start_clock()
                    err = bare_kill_and_mrelease(fd)
                    left_after_call = int(usage_path.read_text()) - usage_before
                    mrelease = {0: "reaped", 3: "gone"}.get(err, f"errno {err}")
                else:
                    # The exit itself is not what we time (memory is): a starved victim
                    # may take seconds to finish exiting after its memory is reaped.
                    exit_wait_s = cap_s if condition == "normal" else 1.0

                    async def _pressured() -> Any:
                        watcher.start_clock()
                        return await kill_and_reap(pidfd=fd, reaper=reaper, timeout_s=exit_wait_s)

                    record = runner.run(_pressured())
                    mrelease = str(record.mrelease.status) if record.mrelease else None
                    reaped_ms = record.signal_to_reaped_ms
                    exit_ms = record.signal_to_exit_ms
                watcher.join(cap_s + 5)
            finally:
                watcher.stop()
                watcher.join(5)
                kill_quietly(proc.pid)
                if isinstance(starve, CpuStarvation):
                    starve.release()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(60)
        assert watcher.t0_ns is not None
        freed_ms = (
            (watcher.freed_ns - watcher.t0_ns) / 1e6 if watcher.freed_ns is not None else None
        )
        grown = max(1, usage_at_kill - usage_before)
        fraction = (
            1.0
            if freed_ms is not None
            else (max(0.0, min(1.0, (usage_at_kill - watcher.last_usage) / grown)))
        )
        return Trial(
            size_mib,
            condition,
            method,
            rep,
            freed_ms,
            fraction,
            mrelease,
            reaped_ms,
            exit_ms,
            usage_at_kill,
            usage_before,
            left_after_call,
        )


def size_label(size_mib: int) -> str:
    return f"{size_mib // 1024} GiB" if size_mib >= 1024 else f"{size_mib} MiB"


def _plan(config: Config) -> list[tuple[int, str, str, int]]:
    """(size, condition, method, rep), interleaved so drift spreads over every method."""
    starve = config.starve
    plan = [
        (size, condition, method, rep)
        for size, reps in zip(config.relief_sizes_mib, config.relief_reps, strict=True)
        for rep in range(reps)
        for condition in ("normal", starve)
        for method in METHODS
    ]
    if starve != "quota" and config.relief_sizes_mib:
        # Evidence for the choice of starvation: a 1 % CPU quota, on the smallest victim.
        size = min(config.relief_sizes_mib)
        plan += [
            (size, "quota", method, rep)
            for rep in range(min(2, max(config.relief_reps)))
            for method in METHODS
        ]
    return plan


def _freed_text(value: float, group: list[Trial], cap_s: float) -> str:
    """A statistic of freed times; at the cap, how much was freed by then."""
    capped = [t for t in group if t.freed_ms is None]
    if capped and value >= cap_s * 1000:
        fractions = sorted(t.freed_fraction for t in capped)
        share = fractions[len(fractions) // 2] * 100
        return f">{cap_s:g} s ({share:.0f} % freed)"
    return fmt_ms(value)


def _left_after_call(trials: list[Trial]) -> str:
    parts = []
    for condition in ("normal", "idle", "quota"):
        left = [
            t.left_after_call
            for t in trials
            if t.condition == condition and t.left_after_call is not None
        ]
        if left:
            parts.append(f"{CONDITION_NAMES[condition]} {max(left) / MIB:.0f} MiB")
    return ", ".join(parts) or "-"


def _values(group: list[Trial], cap_s: float) -> list[float]:
    return [t.freed_ms if t.freed_ms is not None else cap_s * 1000 for t in group]


def run(config: Config, progress: Progress) -> Section:
    from pressured.reaper import Reaper
    from pressured.testing.scratch import scratch_unavailable_reason

    section = Section("relief")
    table = Table(
        "relief",
        "Relief: SIGKILL -> memory freed (ms)",
        [
            "victim",
            "condition",
            "method",
            "n",
            "min",
            "median",
            "p99",
            "max",
            "median vs kill only",
            "median vs floor",
            "mrelease ESRCH",
        ],
    )
    section.tables.append(table)
    reason = scratch_unavailable_reason()
    cpus = sorted(os.sched_getaffinity(0))
    if reason is None and len(cpus) < 2:
        reason = "needs two CPUs (victim on one, reaper on the other)"
    if reason is not None:
        section.skipped = reason
        table.notes.append(f"skipped: {reason}")
        _targets(section, [], config)
        return section
    reaper_cpu, victim_cpu = cpus[0], cpus[-1]
    trials: list[Trial] = []
    plan = _plan(config)
    previous_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        with (
            pinned({reaper_cpu}),
            Reaper(cpus={reaper_cpu}) as reaper,
            asyncio.Runner() as runner,
        ):
            for index, (size, condition, method, rep) in enumerate(plan, 1):
                trial = one_trial(
                    size,
                    condition,
                    method,
                    rep,
                    config=config,
                    runner=runner,
                    reaper=reaper,
                    victim_cpu=victim_cpu,
                )
                trials.append(trial)
                shown = (
                    fmt_ms(trial.freed_ms) + " ms"
                    if trial.freed_ms is not None
                    else (f">{config.relief_cap_s:g} s ({trial.freed_fraction * 100:.0f} % freed)")
                )
                extra = f", mrelease {trial.mrelease}" if trial.mrelease else ""
                progress(
                    "relief",
                    f"{index}/{len(plan)} {size_label(size)} {CONDITION_NAMES[condition]}, "
                    f"{METHOD_NAMES[method]}, rep {rep + 1}: {shown}{extra}",
                )
    finally:
        sys.setswitchinterval(previous_switch)
    section.raw["trials"] = [asdict(t) for t in trials]
    section.raw["reaper_cpu"] = reaper_cpu
    section.raw["victim_cpu"] = victim_cpu
    section.raw["starve"] = config.starve
    cap_s = config.relief_cap_s
    keys = sorted(
        {(t.size_mib, t.condition) for t in trials},
        key=lambda k: (k[0], ("normal", config.starve, "quota").index(k[1])),
    )
    for size, condition in keys:
        by_method = {
            method: [
                t
                for t in trials
                if (t.size_mib, t.condition, t.method) == (size, condition, method)
            ]
            for method in METHODS
        }
        base = Summary.of(_values(by_method["kill_only"], cap_s)).median
        base_capped = any(t.freed_ms is None for t in by_method["kill_only"])
        floor = Summary.of(_values(by_method["floor"], cap_s)).median
        for method, group in by_method.items():
            if not group:
                continue
            summary = Summary.of(_values(group, cap_s))
            gone = sum(1 for t in group if t.mrelease == "gone")
            calls = sum(1 for t in group if t.mrelease is not None)
            if method == "kill_only":
                vs_base = "1x (baseline)"
            else:
                vs_base = (
                    ("≥" if base_capped else "") + fmt_ratio(base / summary.median) + " faster"
                )
            table.rows.append(
                [
                    size_label(size),
                    CONDITION_NAMES[condition],
                    METHOD_NAMES[method],
                    str(summary.n),
                    _freed_text(summary.min, group, cap_s),
                    _freed_text(summary.median, group, cap_s),
                    _freed_text(summary.p99, group, cap_s),
                    _freed_text(summary.max, group, cap_s),
                    vs_base,
                    "1x (floor)"
                    if method == "floor"
                    else ("≥" if method == "kill_only" and base_capped else "")
                    + fmt_ratio(summary.median / floor),
                    "-" if method == "kill_only" else f"{gone}/{calls}",
                ]
            )
    table.notes += [
        f"Victim: the `hog` workload (touched anonymous memory, 4 KiB pages) alone in its own "
        f"scratch cgroup without a limit, pinned to CPU {victim_cpu}; pressured's reaper "
        f"thread and the benchmark's own threads pinned to CPU {reaper_cpu}.",
        "Starved: SCHED_IDLE beside a busy loop (nice 0) pinned to the victim's CPU; "
        "`1 % CPU quota`: a new v1 cpu cgroup with cpu.cfs_quota_us=1000 of "
        "cfs_period_us=100000.",
        "Freed: the first ~1 ms sample of the victim memcg's memory.usage_in_bytes at or below "
        "its level before the victim started, plus page cache the victim brought in (it "
        "outlives any process), plus 1 % of the victim's size (page tables go only at exit) "
        "and 40 MiB (see the next note). Timed from just before the signal; for pressured "
        "from just before `await kill_and_reap(pidfd=..., reaper=...)`, so its thread hop "
        "counts.",
        "Why 40 MiB: a dying victim that got a little CPU has begun its own unmap; pages it "
        "unmapped sit in its mmu_gather batch (up to 10,000 pages) until it runs again, and "
        "mrelease cannot take them. Measured right after the floor's mrelease returned, still "
        "charged (max): " + _left_after_call(trials) + ".",
        f"Kill-only waits are capped at {cap_s:g} s; a capped run counts as the cap in the "
        "statistics, so ratios against it are lower bounds (≥).",
        "Repetitions: "
        + ", ".join(
            f"{size_label(s)} x{r}"
            for s, r in zip(config.relief_sizes_mib, config.relief_reps, strict=True)
        )
        + " per condition and method, interleaved (each repetition runs every condition "
        "and method in turn).",
    ]
    _targets(section, trials, config)
    section.notes += reading(trials, config)
    return section


def _median(trials: list[Trial], size: int, condition: str, method: str, cap_s: float) -> float:
    group = [t for t in trials if (t.size_mib, t.condition, t.method) == (size, condition, method)]
    return Summary.of(_values(group, cap_s)).median if group else math.nan


def reading(trials: list[Trial], config: Config) -> list[str]:
    """A few sentences computed from the figures."""
    if not trials:
        return []
    cap_s = config.relief_cap_s
    sizes = config.relief_sizes_mib
    size = 4096 if 4096 in sizes else max(sizes)
    biggest = max(sizes)
    lines = []
    kill = _median(trials, size, config.starve, "kill_only", cap_s)
    floor = _median(trials, size, config.starve, "floor", cap_s)
    ours = _median(trials, size, config.starve, "pressured", cap_s)
    capped = [
        t
        for t in trials
        if (t.size_mib, t.condition, t.method) == (size, config.starve, "kill_only")
        and t.freed_ms is None
    ]
    if capped:
        share = sorted(t.freed_fraction for t in capped)[len(capped) // 2] * 100
        kill_text = f"had freed only {share:.0f} % after {cap_s:g} s"
    else:
        kill_text = f"took {fmt_ms(kill)} ms"
    lines.append(
        f"Relief, CPU-starved {size_label(size)} victim: left to its own exit it {kill_text}; "
        f"the bare kill+mrelease floor freed it in {fmt_ms(floor)} ms and pressured's "
        f"kill_and_reap in {fmt_ms(ours)} ms ({ours / floor:.2f}x the floor): the reaper "
        "thread on the other CPU does the unmapping, at about "
        f"{size * MIB / GIB / (ours / 1000):.0f} GiB/s here."
    )
    normal = [_median(trials, biggest, "normal", m, cap_s) for m in METHODS]
    lines.append(
        f"Relief, normal {size_label(biggest)} victim: kill only {fmt_ms(normal[0])} ms, "
        f"floor {fmt_ms(normal[1])} ms, pressured {fmt_ms(normal[2])} ms: even with a CPU "
        "of its own the victim's exit path is slower than an mrelease from outside."
    )
    quota = [t for t in trials if t.condition == "quota"]
    if quota:
        qsize = quota[0].size_mib
        qkill = _median(trials, qsize, "quota", "kill_only", cap_s)
        lines.append(
            f"A 1 % CPU quota does not starve a killed victim on this kernel: kill only freed "
            f"the {size_label(qsize)} victim in {fmt_ms(qkill)} ms under the quota (CFS "
            "bandwidth throttling now happens on the return to user space, and a killed task "
            "exits inside the kernel). The starved condition therefore uses SCHED_IDLE "
            "beside a busy loop."
        )
    gone = [t for t in trials if t.mrelease == "gone"]
    calls = [t for t in trials if t.mrelease is not None]
    lines.append(
        f"mrelease lost the ESRCH race in {len(gone)} of {len(calls)} calls "
        f"(floor {sum(t.method == 'floor' for t in gone)}, pressured "
        f"{sum(t.method == 'pressured' for t in gone)})."
    )
    return lines


def _targets(section: Section, trials: list[Trial], config: Config) -> None:
    """CPU-starved 4 GiB victim: >= 20x faster than kill only, within 1.3x of the floor,
    ESRCH in fewer than 1 run in 10."""
    sizes = config.relief_sizes_mib
    size = 4096 if 4096 in sizes else (max(sizes) if sizes else 0)
    label = f"CPU-starved {size_label(size)} victim" if size else "CPU-starved victim"
    if size != 4096:
        label += " (not the 4 GiB of the target)"
    cap_s = config.relief_cap_s

    def medians(method: str) -> tuple[float, bool]:
        group = [
            t
            for t in trials
            if (t.size_mib, t.condition, t.method) == (size, config.starve, method)
        ]
        return (
            Summary.of(_values(group, cap_s)).median if group else float("nan"),
            any(t.freed_ms is None for t in group),
        )

    (kill_only, capped), (ours, _), (floor, _) = (
        medians("kill_only"),
        medians("pressured"),
        medians("floor"),
    )
    texts = (
        "pressured frees it >= 20x faster than kill only (median)",
        "pressured within 1.3x of the bare floor (median)",
        "pressured's mrelease loses the ESRCH race in < 1 run in 10",
    )
    if not trials or any(math.isnan(v) for v in (kill_only, ours, floor)):
        for text in texts:
            section.targets.append(Target("relief", f"{label}: {text}", "-", None))
        return
    speedup = kill_only / ours
    section.targets.append(
        Target(
            "relief",
            f"{label}: {texts[0]}",
            f"{'≥' if capped else ''}{fmt_ratio(speedup)} ({'>' if capped else ''}"
            f"{fmt_ms(kill_only)} ms vs {fmt_ms(ours)} ms)",
            speedup >= 20,
        )
    )
    ratio = ours / floor
    section.targets.append(
        Target(
            "relief",
            f"{label}: {texts[1]}",
            f"{ratio:.2f}x ({fmt_ms(ours)} vs {fmt_ms(floor)} ms)",
            ratio <= 1.3,
        )
    )
    ours_starved = [
        t
        for t in trials
        if (t.size_mib, t.condition, t.method) == (size, config.starve, "pressured")
    ]
    ours_all = [t for t in trials if t.method == "pressured"]
    gone = sum(1 for t in ours_starved if t.mrelease == "gone")
    gone_all = sum(1 for t in ours_all if t.mrelease == "gone")
    section.targets.append(
        Target(
            "relief",
            f"{label}: {texts[2]}",
            f"{gone}/{len(ours_starved)} on that victim; {gone_all}/{len(ours_all)} over every "
            "pressured relief run",
            gone * 10 < len(ours_starved) and gone_all * 10 < max(1, len(ours_all)),
        )
    )
