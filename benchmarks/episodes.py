"""End to end under real pressure: onset of stall -> kill -> stall over, with ``pressured run``.

Three cgroup levels: T (a scratch group without a limit), W (T's child, v2 group + v1 memcg
limited to ``episode_limit_mib``: the daemon watches it, as a subprocess with its JSON log, on
defaults but for a higher rate limit and metrics off) and, per episode, a fresh child of W
running the ``thrash`` workload: it maps a file larger than the limit and touches every page
in a loop (page-cache thrash).

Observed by this process, never from W's own pressure file (reading it at short intervals
would starve the daemon's unprivileged trigger, docs/design.md):

* onset = the first rise of T's cumulative ``some`` stall (``total=`` in its
  memory.pressure), polled every 10 ms. Measured while building this suite: reading a
  group's pressure file every 2 ms stops its ``total`` from growing at all on this kernel
  (0 ms of stall counted in 2 s against 658 ms in its parent), every 5 ms and slower does
  not; so not faster than 10 ms, and not from the thrasher's own group, which is then lost;
* death = the thrasher's pidfd turning readable;
* stall over = the last rise of T's stall total after the signal (followed for 0.5 s after
  the death). "Memory back under the limit" has no sharper meaning for page-cache thrash:
  usage stays at the limit after the death because the file's pages stay cached (clean and
  reclaimable), and memcg memory.stat lags by up to its 2 s flush, so the end of the stall is
  the relief that can be timed.

The daemon's ``victim.killed`` line gives event -> decision -> signal -> exit; the trigger
event time is derived from the death back through those figures.

Polling comparison: the same episodes again without the daemon, watched by two pollers
(100 ms and 1 s, random phase) applying three rules each: PSI ``some avg10 >= 10`` (nohang
style), usage >= 95 % of the limit, and available (limit - usage + inactive file) <= 5 % of
the limit (earlyoom's MemAvailable rule, per cgroup). Their first detection is timed from the
same onset; episodes end at onset + ``poller_cap_s``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import select
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import MIB, REPO, Config, Progress, Section, Summary, Table, Target, fmt_ms

THRASH_FILE = "/var/tmp/pressured-bench-thrash.bin"
OBSERVE_S = 0.01
SETTLE_S = 2.5
DAEMON_CAP_S = 30.0
AFTER_DEATH_S = 0.5
POLL_RULES = ("psi_avg10", "usage_95", "available_5")
RULE_NAMES = {
    "psi_avg10": "PSI some avg10 >= 10 %",
    "usage_95": "usage >= 95 % of limit",
    "available_5": "available <= 5 % of limit",
}
POLL_INTERVALS = (0.1, 1.0)
TARGET_S = 3.0

LogLine = dict[str, Any]


# -- the daemon ------------------------------------------------------------------------------
class DaemonProcess:
    """``python3 -m pressured run`` with a JSON log followed on a thread."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = [sys.executable, "-m", "pressured", "run", "--log-format", "json", *argv]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[LogLine] = []
        self.queue: queue.Queue[LogLine | None] = queue.Queue()
        self.last_line_ns = time.monotonic_ns()

    def __enter__(self) -> DaemonProcess:
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env,
            cwd=str(REPO),
        )
        threading.Thread(target=self._pump, name="bench-daemon-log", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def _pump(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                line = json.loads(raw)
                if isinstance(line, dict):
                    self.last_line_ns = time.monotonic_ns()
                    self.lines.append(line)
                    self.queue.put(line)
        self.queue.put(None)

    def wait_for(
        self, event: str, timeout_s: float, where: Callable[[LogLine], bool] | None = None
    ) -> LogLine | None:
        for line in list(self.lines):
            if line.get("event") == event and (where is None or where(line)):
                return line
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                arrived = self.queue.get(timeout=remaining)
            except queue.Empty:
                return None
            if arrived is None:
                return None
            if arrived.get("event") == event and (where is None or where(arrived)):
                return arrived
        return None


def daemon_config(path: Path, cgroup: str, memcg: str | None) -> Path:
    memcg_line = f'memcg_v1 = "{memcg}"\n' if memcg else ""
    path.write_text(
        "[daemon]\nmlockall = false\noom_score_adj = 0\n"
        "\n[metrics]\nenabled = false\n"
        "\n[guard]\nmax_kills_per_minute = 120\n"
        f'\n[[scopes]]\ncgroup = "{cgroup}"\n{memcg_line}'
        '[[scopes.policies]]\nname = "oom_score"\n'
    )
    path.chmod(0o600)
    return path


# -- reading the groups ------------------------------------------------------------------------
def some_total_us(pressure_fd: int) -> int:
    text = os.pread(pressure_fd, 512, 0).decode("ascii", "replace")
    for word in text.split("\n", 1)[0].split():
        if word.startswith("total="):
            return int(word[6:])
    return 0


def some_avg10(path: Path) -> float:
    first = path.read_text().split("\n", 1)[0]
    for word in first.split():
        if word.startswith("avg10="):
            return float(word[6:])
    return 0.0


def v1_stat(directory: Path) -> dict[str, int]:
    stat: dict[str, int] = {}
    for line in (directory / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            stat[key] = int(value)
    return stat


@dataclass
class Episode:
    index: int
    mode: str
    """``daemon`` or ``pollers``."""
    onset_s: float | None = None
    """Seconds from the thrasher's start to the first stall."""
    onset_to_death_ms: float | None = None
    signal_to_stall_over_ms: float | None = None
    killed_by_daemon: bool = False
    event_to_decision_ms: float | None = None
    decision_to_signal_ms: float | None = None
    signal_to_exit_ms: float | None = None
    mrelease: str | None = None
    psi_events: int = 0
    detections_ms: dict[str, float | None] = field(default_factory=dict)
    """``"<interval>/<rule>"`` -> detection time from onset (ms); None: not within the cap."""
    note: str = ""
    disturbed: bool = False
    death_ns: int | None = None
    """The thrasher died by another hand (another daemon on this shared machine, the kernel):
    the episode is kept in the JSON but left out of the tables."""

    @property
    def onset_to_trigger_ms(self) -> float | None:
        parts = (
            self.onset_to_death_ms,
            self.signal_to_exit_ms,
            self.decision_to_signal_ms,
            self.event_to_decision_ms,
        )
        if any(part is None for part in parts):
            return None
        death, exit_, to_signal, to_decision = (float(p or 0) for p in parts)
        return death - exit_ - to_signal - to_decision

    @property
    def onset_to_signal_ms(self) -> float | None:
        if self.onset_to_death_ms is None or self.signal_to_exit_ms is None:
            return None
        return self.onset_to_death_ms - self.signal_to_exit_ms


class Poller(threading.Thread):
    """A polling daemon's loop: every ``interval`` (random phase), evaluate the rules."""

    def __init__(self, interval: float, group_dir: Path, child_pressure: Path, limit: int) -> None:
        super().__init__(name=f"bench-poller-{interval:g}", daemon=True)
        self.interval = interval
        self.group_dir = group_dir
        self.child_pressure = child_pressure
        self.limit = limit
        self.first: dict[str, int] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        next_tick = time.monotonic() + random.uniform(0, self.interval)
        while not self.stop_event.is_set():
            delay = next_tick - time.monotonic()
            if delay > 0 and self.stop_event.wait(delay):
                return
            next_tick += self.interval
            now = time.monotonic_ns()
            try:
                usage = int((self.group_dir / "memory.usage_in_bytes").read_text())
                inactive = v1_stat(self.group_dir).get("total_inactive_file", 0)
                avg10 = some_avg10(self.child_pressure)
            except (OSError, ValueError):
                continue
            verdicts = {
                "psi_avg10": avg10 >= 10.0,
                "usage_95": usage >= 0.95 * self.limit,
                "available_5": (self.limit - usage + inactive) <= 0.05 * self.limit,
            }
            for rule, hit in verdicts.items():
                if hit and rule not in self.first:
                    self.first[rule] = now
            if len(self.first) == len(POLL_RULES):
                return


@dataclass
class Arena:
    """Three levels: T (top, no limit: the observer reads its pressure), W (T's child with the
    memory limit: the daemon watches it) and one fresh child of W per episode (the thrasher).

    Why T: W's own pressure file belongs to the daemon (readers starve its trigger), and a
    reader fast enough to time the onset would stop the stall total of the group it reads
    from growing (see the module docstring), so that group must not be one that matters."""

    scratch: Any
    watched: Any
    watched_v1: Path

    @classmethod
    def make(cls, scratch: Any, name: str, limit_bytes: int) -> Arena:
        watched = scratch.child(name, limit_bytes=limit_bytes)
        if watched.memcg_v1_path is None:
            raise RuntimeError("episodes need a v1 memcg (hybrid host)")
        return cls(scratch, watched, scratch.layout.v1_dir("memory", watched.memcg_v1_path))

    def remove(self) -> None:
        """rmdir W (v2 and v1) once its episode groups are gone."""
        for directory in (Path(self.watched.directory), self.watched_v1):
            for _attempt in range(100):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)

    @property
    def top_pressure(self) -> Path:
        return Path(self.scratch.group.directory) / "memory.pressure"

    def episode_group(self, name: str) -> Any:
        from pressured.kernel.cgroupfs import Cgroup

        v1_path = f"{self.watched.memcg_v1_path}/{name}"
        (self.watched_v1 / name).mkdir(exist_ok=True)
        return Cgroup(self.scratch.layout, f"{self.watched.path}/{name}", v1_path).create()

    def remove_episode_group(self, name: str) -> None:
        """rmdir the episode's groups (v2 and v1), retrying while they empty."""
        for directory in (Path(self.watched.directory) / name, self.watched_v1 / name):
            for _attempt in range(100):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def one_episode(
    index: int,
    mode: str,
    *,
    arena: Arena,
    thrash_file: str,
    config: Config,
    daemon: DaemonProcess | None,
) -> Episode:
    from pressured.testing.scratch import evict_from_cache

    episode = Episode(index, mode)
    name = f"ep{index}-{mode}"
    child = arena.episode_group(name)
    group = arena.scratch
    limit = config.episode_limit_mib * MIB
    pressure_fd = os.open(arena.top_pressure, os.O_RDONLY | os.O_CLOEXEC)
    pollers: list[Poller] = []
    thrasher: subprocess.Popen[bytes] | None = None
    pidfd = -1
    try:
        evict_from_cache(thrash_file)
        base = some_total_us(pressure_fd)
        events_before = len(daemon.lines) if daemon else 0
        if mode == "pollers":
            pollers = [
                Poller(
                    interval, arena.watched_v1, arena.watched.directory / "memory.pressure", limit
                )
                for interval in POLL_INTERVALS
            ]
            for poller in pollers:
                poller.start()
        started = time.monotonic_ns()
        thrasher = group.spawn_workload("thrash", thrash_file, group=child, wait_ready=False)
        pidfd = os.pidfd_open(thrasher.pid)
        onset: int | None = None
        death: int | None = None
        trace: list[tuple[int, int]] = []  # (time, T's cumulative stall) from the onset on
        cap_ns = int((config.poller_cap_s if mode == "pollers" else DAEMON_CAP_S) * 1e9)
        while True:
            now = time.monotonic_ns()
            total = some_total_us(pressure_fd)
            if onset is None and total > base:
                onset = now
            if onset is not None:
                trace.append((now, total))
            if death is None and select.select([pidfd], [], [], 0)[0]:
                death = now
            if death is not None and now - death > AFTER_DEATH_S * 1e9:
                if onset is None:
                    episode.note = "no onset seen"
                break
            if (
                mode == "pollers"
                and onset is not None
                and (now - onset > cap_ns or all(len(p.first) == len(POLL_RULES) for p in pollers))
            ):
                break
            if now - started > cap_ns + 20e9:
                episode.note = "timed out"
                break
            time.sleep(OBSERVE_S)
        episode.death_ns = death
        if onset is not None:
            episode.onset_s = (onset - started) / 1e9
        if mode == "pollers" and death is not None:
            episode.disturbed = True
            episode.note = (
                f"the thrasher died {(death - started) / 1e9:.1f} s in, killed by another hand"
            )
        if mode == "pollers" and onset is not None:
            for poller in pollers:
                for rule in POLL_RULES:
                    hit = poller.first.get(rule)
                    episode.detections_ms[f"{poller.interval:g}/{rule}"] = (
                        (hit - onset) / 1e6 if hit is not None else None
                    )
        if mode == "daemon" and daemon is not None and thrasher is not None:
            pid, own_group = thrasher.pid, child.path
            # The daemon kills the thrasher alone, or (its leaf group holding just it, #12's
            # family rule) by cgroup.kill of that group: a record without a pid.
            line = daemon.wait_for(
                "victim.killed",
                5.0,
                where=lambda ln: (
                    ln.get("pid") == pid
                    or (ln.get("kind") == "cgroup" and ln.get("cgroup") == own_group)
                ),
            )
            if line is not None:
                episode.killed_by_daemon = True
                episode.event_to_decision_ms = line.get("event_to_decision_ms")
                episode.decision_to_signal_ms = line.get("decision_to_signal_ms")
                episode.signal_to_exit_ms = line.get("signal_to_exit_ms")
                episode.mrelease = line.get("mrelease")
            if line is None and death is not None:
                episode.disturbed = True
                episode.note = "the thrasher died without a kill by this daemon"
            episode.psi_events = sum(
                1
                for ln in daemon.lines[events_before:]
                if ln.get("event") == "pressure.event" and ln.get("source") == "psi"
            )
            if onset is not None and death is not None:
                episode.onset_to_death_ms = (death - onset) / 1e6
            if death is not None and episode.signal_to_exit_ms is not None:
                # The last rise of the stall total after the signal: the stall is over.
                signal_ns = death - int(episode.signal_to_exit_ms * 1e6)
                rises = [
                    t
                    for (t, v), (_t0, v0) in zip(trace[1:], trace, strict=False)
                    if v > v0 and t >= signal_ns
                ]
                episode.signal_to_stall_over_ms = (max(rises) - signal_ns) / 1e6 if rises else 0.0
    finally:
        for poller in pollers:
            poller.stop_event.set()
        for poller in pollers:
            poller.join(5)
        if thrasher is not None:
            with contextlib.suppress(OSError):
                thrasher.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                thrasher.wait(30)
            with contextlib.suppress(ValueError):
                group.processes.remove(thrasher)
        if pidfd >= 0:
            os.close(pidfd)
        os.close(pressure_fd)
        arena.remove_episode_group(name)
    return episode


def run(config: Config, progress: Progress) -> Section:
    from pressured.testing.scratch import ScratchGroup, make_thrash_file, scratch_unavailable_reason

    section = Section("episodes")
    daemon_table = Table(
        "episodes",
        "End to end under real pressure: page-cache thrash in a "
        f"{config.episode_limit_mib} MiB cgroup, `pressured run` watching (ms)",
        ["step", "episodes", "min", "median", "p99", "max"],
    )
    poll_table = Table(
        "episodes_pollers",
        "The same episodes watched by polling loops: first detection after the onset of stall",
        ["watcher", "interval", "detected", "min", "median", "p99", "max"],
    )
    section.tables += [daemon_table, poll_table]
    reason = scratch_unavailable_reason()
    if reason is None and not os.path.exists("/proc/pressure/memory"):
        reason = "no PSI"
    if reason is not None:
        section.skipped = reason
        daemon_table.notes.append(f"skipped: {reason}")
        _target(section, [])
        return section
    episodes: list[Episode] = []
    existed = os.path.exists(THRASH_FILE)
    thrash = str(make_thrash_file(THRASH_FILE, config.thrash_file_mib * MIB))
    name = f"pressured-bench-e2e-{uuid.uuid4().hex[:8]}"
    try:
        with (
            ScratchGroup(None, name=name) as group,
            tempfile.TemporaryDirectory(prefix="pressured-bench-") as tmp,
        ):
            arena = Arena.make(group, "watched", config.episode_limit_mib * MIB)
            conf = daemon_config(
                Path(tmp) / "pressured.toml", arena.watched.path, arena.watched.memcg_v1_path
            )
            _daemon_series(
                section,
                arena,
                thrash=thrash,
                config=config,
                conf=conf,
                episodes=episodes,
                progress=progress,
            )
            _poller_series(group, thrash, config, episodes, progress)
    finally:
        if not existed:
            Path(THRASH_FILE).unlink(missing_ok=True)
    section.raw["episodes"] = [
        {
            **asdict(e),
            "onset_to_trigger_ms": e.onset_to_trigger_ms,
            "onset_to_signal_ms": e.onset_to_signal_ms,
        }
        for e in episodes
    ]
    _tables(section, daemon_table, poll_table, episodes, config)
    _target(section, [e for e in episodes if e.mode == "daemon" and not e.disturbed])
    section.notes += reading(episodes, config)
    return section


def _start_daemon(conf: Path) -> DaemonProcess:
    daemon = DaemonProcess(["--config", str(conf)]).__enter__()
    if daemon.wait_for("controller.ready", 30) is None:
        daemon.stop()
        raise RuntimeError("the daemon did not report controller.ready")
    return daemon


def _settle(daemon: DaemonProcess, death_ns: float) -> None:
    """Wait until this episode cannot leak into the next: at least SETTLE_S after the death
    and no daemon log line for one trigger window (2 s), at most 15 s."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = time.monotonic_ns()
        if now - death_ns >= SETTLE_S * 1e9 and now - daemon.last_line_ns >= 2.5e9:
            return
        time.sleep(0.1)


def _daemon_series(
    section: Section,
    arena: Arena,
    *,
    thrash: str,
    config: Config,
    conf: Path,
    episodes: list[Episode],
    progress: Progress,
) -> None:
    """Episodes against one long-running daemon, restarted if something else killed it."""
    daemon = _start_daemon(conf)
    restarts = 0
    try:
        section.raw["triggers"] = [
            {k: ln.get(k) for k in ("pressure_level", "threshold_ms", "window_ms")}
            for ln in daemon.lines
            if ln.get("event") == "trigger.armed"
        ]
        good = 0
        for attempt in range(2 * config.episodes + 3):
            if good >= config.episodes:
                break
            if daemon.proc is None or daemon.proc.poll() is not None:
                restarts += 1
                progress(
                    "episodes",
                    f"the daemon died ({daemon.proc and daemon.proc.poll()}): restarting it",
                )
                daemon.stop()
                daemon = _start_daemon(conf)
            episode = one_episode(
                attempt, "daemon", arena=arena, thrash_file=thrash, config=config, daemon=daemon
            )
            episodes.append(episode)
            if episode.disturbed:
                progress("episodes", f"daemon episode discarded: {episode.note}")
            else:
                good += 1
                progress(
                    "episodes",
                    f"daemon episode {good}/{config.episodes}: onset -> death "
                    f"{fmt_ms(episode.onset_to_death_ms)} ms, {episode.psi_events} PSI "
                    "event(s)",
                )
            _settle(daemon, episode.death_ns or time.monotonic_ns())
    finally:
        daemon.stop()
        section.raw["daemon_restarts"] = restarts


def _poller_series(
    group: Any, thrash: str, config: Config, episodes: list[Episode], progress: Progress
) -> None:
    """Episodes without the daemon, each in a fresh limited group so the pollers' PSI
    averages start from zero (avg10 takes tens of seconds to decay after an episode)."""
    good = 0
    for attempt in range(2 * config.episodes + 3):
        if good >= config.episodes:
            return
        arena = Arena.make(group, f"polled{attempt}", config.episode_limit_mib * MIB)
        try:
            episode = one_episode(
                attempt, "pollers", arena=arena, thrash_file=thrash, config=config, daemon=None
            )
        finally:
            arena.remove()
        episodes.append(episode)
        if episode.disturbed:
            progress("episodes", f"poller episode discarded: {episode.note}")
            continue
        good += 1
        found = sum(v is not None for v in episode.detections_ms.values())
        progress(
            "episodes",
            f"poller episode {good}/{config.episodes}: {found}/{len(episode.detections_ms)} "
            f"poller rules detected within {config.poller_cap_s:g} s",
        )


def _row(label: str, values: list[float | None], total: int) -> list[str]:
    present = [v for v in values if v is not None]
    summary = Summary.of(present)
    shown = f"{len(present)}/{total}"
    return [
        label,
        shown,
        fmt_ms(summary.min),
        fmt_ms(summary.median),
        fmt_ms(summary.p99),
        fmt_ms(summary.max),
    ]


def _tables(
    section: Section,
    daemon_table: Table,
    poll_table: Table,
    episodes: list[Episode],
    config: Config,
) -> None:
    ours = [e for e in episodes if e.mode == "daemon" and not e.disturbed]
    polled = [e for e in episodes if e.mode == "pollers" and not e.disturbed]
    disturbed = [e for e in episodes if e.disturbed]
    if disturbed:
        daemon_table.notes.append(
            f"{len(disturbed)} episode(s) discarded and repeated: the thrasher was killed by "
            "another hand (another memory-pressure daemon running on this shared machine, or "
            "the kernel): " + "; ".join(f"{e.mode}: {e.note}" for e in disturbed) + "."
        )
    n = len(ours)
    daemon_table.rows += [
        _row("onset of stall -> trigger event (derived)", [e.onset_to_trigger_ms for e in ours], n),
        _row("trigger event -> decision", [e.event_to_decision_ms for e in ours], n),
        _row("decision -> SIGKILL sent", [e.decision_to_signal_ms for e in ours], n),
        _row("SIGKILL -> victim exited", [e.signal_to_exit_ms for e in ours], n),
        _row("onset of stall -> victim dead (measured)", [e.onset_to_death_ms for e in ours], n),
        _row(
            "SIGKILL -> stall over (last rise of the stall total)",
            [e.signal_to_stall_over_ms for e in ours],
            n,
        ),
    ]
    triggers = section.raw.get("triggers", [])
    armed = ", ".join(
        f"{t.get('pressure_level')} {t.get('threshold_ms'):g}/{t.get('window_ms'):g} ms"
        for t in triggers
        if t.get("threshold_ms") is not None
    )
    daemon_table.notes += [
        f"`pressured run` (uvloop) watching the {config.episode_limit_mib} MiB group with its "
        f"default levels, as armed: {armed or 'see JSON'} (unprivileged: 2 s windows), "
        "policy oom_score, guard rate limit raised to 120/min so ten episodes fit in a "
        "minute. One thrasher (the `thrash` workload over a "
        f"{config.thrash_file_mib} MiB file) per episode, in a fresh child group.",
        "Onset: the first rise of the cumulative `some` stall of W's parent (no limit, nothing "
        "else in it), polled every 10 ms: never W's own pressure file (the daemon's), and not "
        "faster: on this kernel a 2 ms reader stops a group's stall total from growing at all "
        "(measured: 0 ms counted in 2 s while its parent counted 658 ms; 5 ms and slower "
        "readers do not). The trigger "
        "time is derived: death minus the daemon's own signal->exit, decision->signal and "
        "event->decision figures.",
        "Relief is timed as the end of the stall (the last rise of the stall total after the "
        "signal): usage itself stays at the limit after the death, because the file's pages "
        "stay cached, clean and reclaimable, and memcg memory.stat figures lag by up to their "
        "2 s flush on this kernel.",
        f"mrelease results: {_counts([e.mrelease for e in ours])}; PSI events per episode: "
        f"{_counts([str(e.psi_events) for e in ours])}; killed by pressured: "
        f"{sum(e.killed_by_daemon for e in ours)}/{n}.",
    ]
    onset_to_signal = [e.onset_to_signal_ms for e in ours]
    poll_table.rows.append(
        [
            "pressured: PSI trigger (onset -> SIGKILL sent)",
            "event",
            *_row("", onset_to_signal, n)[1:],
        ]
    )
    for interval in POLL_INTERVALS:
        for rule in POLL_RULES:
            key = f"{interval:g}/{rule}"
            values = [e.detections_ms.get(key) for e in polled]
            row = _row("", values, len(polled))
            missed = sum(v is None for v in values)
            if missed:
                row[1] += f" ({missed} not within {config.poller_cap_s:g} s)"
            label = f"{int(interval * 1000)} ms" if interval < 1 else f"{interval:g} s"
            poll_table.rows.append([f"poller: {RULE_NAMES[rule]}", label, *row[1:]])
    poll_table.notes += [
        "Pollers ran on separate episodes of the same workload in the same group, with the "
        "daemon stopped, each tick at a random phase; the figures are detection only (a "
        "poller still has to scan and kill after it). Negative times: the rule was true "
        "before the first stall.",
        "usage >= 95 %: page cache fills any limited group to its limit, thrashing or not, so "
        "this rule fires on every file reader; available <= 5 % counts inactive file pages "
        "as available (as MemAvailable does), so it stays blind to page-cache thrash; PSI "
        "avg10 is a 10 s running average updated every 2 s, whatever the polling interval.",
    ]


def _counts(values: list[str | None]) -> str:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return ", ".join(f"{key} x{count}" for key, count in sorted(counts.items())) or "-"


def _target(section: Section, ours: list[Episode]) -> None:
    text = "End to end: first stall -> victim dead within 3 s (unprivileged 2 s windows)"
    values = [e.onset_to_death_ms for e in ours]
    if not ours:
        section.targets.append(Target("episodes", text, "-", None))
        return
    present = [v for v in values if v is not None]
    within = sum(v <= TARGET_S * 1000 for v in present)
    summary = Summary.of(present)
    section.targets.append(
        Target(
            "episodes",
            text,
            f"{within}/{len(ours)} episodes within 3 s; median {fmt_ms(summary.median)} ms, "
            f"max {fmt_ms(summary.max)} ms",
            within == len(ours),
        )
    )


def reading(episodes: list[Episode], config: Config) -> list[str]:
    ours = [e for e in episodes if e.mode == "daemon" and not e.disturbed]
    polled = [e for e in episodes if e.mode == "pollers" and not e.disturbed]
    deaths = [e.onset_to_death_ms for e in ours if e.onset_to_death_ms is not None]
    if not deaths:
        return []
    death = Summary.of(deaths)
    trigger = Summary.of([v for e in ours if (v := e.onset_to_trigger_ms) is not None])
    own = Summary.of(
        [
            (e.event_to_decision_ms or 0) + (e.decision_to_signal_ms or 0)
            for e in ours
            if e.event_to_decision_ms is not None
        ]
    )
    exits = Summary.of([e.signal_to_exit_ms for e in ours if e.signal_to_exit_ms is not None])
    within = sum(v <= TARGET_S * 1000 for v in deaths)

    def poll(rule: str, interval: float) -> str:
        key = f"{interval:g}/{rule}"
        values = [v for e in polled if (v := e.detections_ms.get(key)) is not None]
        label = f"{int(interval * 1000)} ms" if interval < 1 else f"{interval:g} s"
        if not values:
            return f"not within {config.poller_cap_s:g} s ({label})"
        missed = len(polled) - len(values)
        extra = f", {missed} missed" if missed else ""
        return f"{Summary.of(values).median / 1000:.1f} s ({label}{extra})"

    return [
        f"End to end: from the first stall the victim was dead after {death.median / 1000:.2f} "
        f"s (median; max {death.max / 1000:.2f} s; {within}/{len(deaths)} within the 3 s "
        "target). Almost all of it is the wait for the kernel's trigger: onset -> trigger "
        f"event {trigger.median / 1000:.2f} s (an unprivileged trigger is only checked on the "
        "2 s averaging tick), while pressured's own event -> SIGKILL took "
        f"{fmt_ms(own.median)} ms and the victim exited {fmt_ms(exits.median)} ms after the "
        "signal.",
        "Polling the same workload: a PSI `some avg10 >= 10` poller noticed after "
        f"{poll('psi_avg10', 0.1)} and {poll('psi_avg10', 1.0)}, before any scan or kill; "
        f"`usage >= 95 %` fired {poll('usage_95', 0.1)} / {poll('usage_95', 1.0)} after the "
        "onset, but it fires for any reader of a file once the cache fills the group, "
        "thrashing or not; `available <= 5 %` (MemAvailable-style, cache counted as "
        f"available): {poll('available_5', 0.1)} / {poll('available_5', 1.0)}.",
    ]
