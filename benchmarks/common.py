"""Shared pieces of the benchmark suite: statistics, tables, progress lines, machine facts.

Every section returns a :class:`Section`: tables already formatted as strings (what the
terminal and ``BENCHMARKS.md`` show), the raw samples behind them (what the JSON keeps), and
the issue's targets with met / missed.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

MIB = 1 << 20
GIB = 1 << 30
REPO = Path(__file__).resolve().parent.parent


# -- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """What one run of the suite does; ``smoke`` shrinks every size and repetition."""

    smoke: bool = False
    relief_sizes_mib: tuple[int, ...] = (1024, 4096, 8192)
    relief_reps: tuple[int, ...] = (5, 5, 3)
    relief_cap_s: float = 20.0
    starve: str = "idle"
    reaction_sizes: tuple[int, ...] = (100, 1000, 10_000)
    reaction_events: int = 20
    reaction_chains: tuple[str, ...] = ("oom_score", "default")
    episodes: int = 10
    episode_limit_mib: int = 64
    thrash_file_mib: int = 512
    poller_cap_s: float = 12.0
    idle_seconds: float = 60.0
    group_kill_members: tuple[int, ...] = (1000, 5000)
    victims_timeout_s: float = 25.0
    victim_scenarios: tuple[str, ...] = ()
    """Empty: every scenario in pressured.testing.culprits."""

    @classmethod
    def smoke_config(cls) -> Config:
        return cls(
            smoke=True,
            relief_sizes_mib=(64,),
            relief_reps=(1,),
            relief_cap_s=5.0,
            reaction_sizes=(100,),
            reaction_events=3,
            episodes=1,
            thrash_file_mib=256,
            poller_cap_s=5.0,
            idle_seconds=5.0,
            group_kill_members=(200,),
            victim_scenarios=("impostor",),
        )


# -- statistics ----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), ``q`` in 0..100."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    n: int
    min: float
    median: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(values), min(values), percentile(values, 50), percentile(values, 99), max(values)
        )

    def to_dict(self) -> dict[str, float | None]:
        """JSON-safe: NaN (no samples) becomes None."""
        return {key: None if math.isnan(v) else float(v) for key, v in asdict(self).items()}


def fmt_ms(value: float | None, digits: int | None = None) -> str:
    """Milliseconds for a table: 3 significant-ish digits, ``-`` for missing."""
    if value is None or math.isnan(value):
        return "-"
    if digits is not None:
        return f"{value:.{digits}f}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_ratio(value: float | None) -> str:
    if value is None or math.isnan(value) or math.isinf(value):
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


# -- results -------------------------------------------------------------------------------
@dataclass
class Table:
    id: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Target:
    section: str
    target: str
    measured: str
    met: bool | None
    """None when it could not be measured (skipped section)."""

    @property
    def verdict(self) -> str:
        return "met" if self.met else ("missed" if self.met is False else "not measured")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


@dataclass
class Section:
    name: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "skipped": self.skipped,
            "duration_s": round(self.duration_s, 1),
            "notes": self.notes,
            "tables": [table.to_dict() for table in self.tables],
            "targets": [target.to_dict() for target in self.targets],
            "raw": self.raw,
        }


# -- progress ------------------------------------------------------------------------------
class Progress:
    """One line per step on stderr, with the time since the suite started."""

    def __init__(self, stream: Any = None) -> None:
        self.started = time.monotonic()
        self.stream = stream or sys.stderr

    def __call__(self, section: str, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {section:<9} {message}", file=self.stream, flush=True)


# -- machine -------------------------------------------------------------------------------
def _first_line_with(path: str, prefix: str) -> str | None:
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def machine_facts() -> dict[str, Any]:
    """Kernel, CPU, memory, privilege and cgroup layout: the header of BENCHMARKS.md."""
    from pressured.kernel import caps, cgroupfs

    mem_kib = _first_line_with("/proc/meminfo", "MemTotal") or "0 kB"
    swap_kib = _first_line_with("/proc/meminfo", "SwapTotal") or "0 kB"
    layout = None
    with contextlib.suppress(OSError):
        layout = cgroupfs.discover_layout()
    named = {}
    with contextlib.suppress(OSError):
        named = caps.named_capabilities()
    try:
        uvloop_version = metadata.version("uvloop")
    except metadata.PackageNotFoundError:
        uvloop_version = "not installed"
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "kernel": platform.release(),
        "cpu_model": _first_line_with("/proc/cpuinfo", "model name") or platform.processor(),
        "cpus": os.cpu_count(),
        "memory_gib": round(int(mem_kib.split()[0]) / (1 << 20), 1),
        "swap_gib": round(int(swap_kib.split()[0]) / (1 << 20), 1),
        "euid": os.geteuid(),
        "capabilities": named,
        "cgroup_layout": str(layout.mode) if layout else "unknown",
        "thp": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "python": platform.python_version(),
        "uvloop": uvloop_version,
        "git_commit": (commit or "unknown") + ("+dirty" if dirty else ""),
        "hypervisor": _first_line_with("/proc/cpuinfo", "flags") is not None
        and "hypervisor" in (_first_line_with("/proc/cpuinfo", "flags") or ""),
    }


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def privilege_line(facts: dict[str, Any]) -> str:
    capabilities = facts.get("capabilities", {})
    held = [name for name, has in capabilities.items() if has]
    missing = [name for name, has in capabilities.items() if not has]
    who = "root" if facts.get("euid") == 0 else f"uid {facts.get('euid')}"
    return f"{who}; has {', '.join(held) or 'none'}; lacks {', '.join(missing) or 'none'}"


# -- safety --------------------------------------------------------------------------------
def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` cleans up what it created."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """Pin the calling thread (threads it starts inherit it) to ``cpus`` for a while."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
