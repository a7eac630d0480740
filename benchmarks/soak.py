"""Soak: repeated real pressure episodes against one long-running ``pressured run``, with faults.

    python3 -m benchmarks.soak --minutes 30                  # the full soak, no faults
    python3 -m benchmarks.soak --minutes 30 --faults         # ... with every fault at random
    python3 -m benchmarks.soak --minutes 2 --faults regroup,sighup   # chosen faults only
    python3 -m benchmarks.soak --minutes 2                   # the CI version (tests/test_soak.py)

A scratch cgroup (64 MiB) holds two small bystanders for the whole run. Each episode starts a
page-cache thrasher there and waits for the daemon's kill. The report counts episodes
relieved, wrong victims (anything killed but a thrasher or the fault's own victim group: must
be 0), episodes not relieved within 30 s, daemon restarts (the daemon died and was started
again: must be 0), the daemon's open fds, RSS and locked memory at start and end, and the
longest trigger event -> decision time. It also shows the reaction (trigger event -> SIGKILL
sent) under real pressure beside the same figure for a manual event on a quiet group measured
in this run.

With ``--faults``, before about half of the episodes one fault (chosen at random among those
enabled) is injected, and checked:

- ``regroup``: a second watched group is removed (``scope.gone``, ``watchdog.scope_gone``),
  made again (``scope.back``, ``watchdog.rearmed``), and the next episode thrashes *there*;
- ``threaded``: a threaded child group (its ``cgroup.procs`` fails with EOPNOTSUPP) sits in
  the watched group during the next episode;
- ``stuck``: a process whose command-line read hangs, as behind a stuck page fault (the seam
  in ``benchmarks/soak_daemon.py``: this kernel cannot make one on demand), during the next
  episode;
- ``biggroup``: a child group of 2,000 processes and a thrasher, in a third scope whose policy
  kills whole groups, with the daemon started under a 1,024-fd soft limit (systemd's
  default): the group must die, and the daemon's fds come back;
- ``sighup``: a storm of SIGHUPs; the daemon reloads and keeps running;
- ``idle-http``: 32 idle connections held on the metrics port while ``/healthz`` must still
  answer 200.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import sigterm_as_interrupt
from benchmarks.soak_daemon import NOFILE_ENV, STUCK_DIR_ENV
from pressured.config import Settings
from pressured.controller import Controller
from pressured.events import EventSource, PressureEvent
from pressured.kernel.cgroupfs import Cgroup
from pressured.testing.daemon import Daemon, LogLine, scope_config, write_config
from pressured.testing.scratch import (
    ScratchGroup,
    evict_from_cache,
    make_thrash_file,
    wait_for_ready,
)

EPISODE_TIMEOUT_S = 30.0
EPISODE_GAP_S = 3.0
FAULT_CHANCE = 0.5
CROWD = 2000
IDLE_CONNECTIONS = 32
NOFILE_SOFT = 1024

KILL_LINES = ("victim.killed", "victim.dying")
"""A kill of an episode: confirmed dead, or killed and reaped and still exiting (the record
says ``dying``; its exit is confirmed in the background)."""
FAULTS = ("regroup", "threaded", "stuck", "biggroup", "sighup", "idle-http")
NEEDS = {
    "threaded": "scan (take_snapshot tolerates EOPNOTSUPP from a threaded group)",
    "stuck": "scan (command lines read with a time limit, off the I/O pool)",
    "biggroup": "killpath (cgroup kill without one fd per member; RLIMIT_NOFILE raised)",
    "idle-http": "opsharden (idle timeouts, per-client cap, /healthz always served)",
}
"""Faults whose fix lives on another branch: they pass only once it is merged."""


def proc_figures(pid: int) -> dict[str, int]:
    """Open fds, resident and locked memory (KiB) of a process."""
    figures = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmLck"):
                figures[f"{key.lower()}_kib"] = int(rest.split()[0])
    return figures


async def idle_reaction_ms(group: ScratchGroup, repetitions: int) -> list[float]:
    """Event -> signal for manual events on a quiet group (no pressure): the baseline."""
    settings = Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": False},
            "guard": {
                "cooldown_ms": 0,
                "max_kills_per_minute": 1000,
                "protect_cmdline": ["workloads sleep"],
            },
            "scopes": [{"cgroup": group.path, "memcg_v1": group.memcg_path}],
        }
    )
    figures = []
    async with Controller(settings) as controller:
        for _ in range(repetitions):
            victim = group.spawn_workload("hog", "4")
            record = await controller.scopes[0].handle(
                PressureEvent(scope=group.path, level="some", source=EventSource.MANUAL)
            )
            if (
                record is not None
                and record.event_to_decision_ms is not None
                and record.decision_to_signal_ms is not None
            ):
                figures.append(record.event_to_decision_ms + record.decision_to_signal_ms)
            victim.wait(10)
    return figures


def summarize(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {
        "n": len(values),
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def extra_scope(group: ScratchGroup, policies: str) -> str:
    memcg = f'memcg_v1 = "{group.memcg_path}"\n' if group.memcg_path else ""
    return (
        f'\n[[scopes]]\ncgroup = "{group.path}"\n{memcg}'
        '[[scopes.levels]]\nname = "some"\nkind = "some"\nthreshold_ms = 70\nwindow_ms = 1000\n'
        + policies
    )


GROUP_POLICY = (
    '[[scopes.policies]]\nname = "cgroup_pressure"\n'
    'options = { threshold_percent = 1.0, kind = "some", require_reclaim = false }\n'
)


def soak(minutes: float, workdir: Path, faults: tuple[str, ...], seed: int) -> dict[str, Any]:
    tag = f"pressured-soak-{os.getpid()}"
    thrash = make_thrash_file(workdir / f"{tag}.bin", 512 << 20)
    journal = workdir / f"{tag}.jsonl"
    config_path = workdir / f"{tag}.toml"
    report: dict[str, Any] = {"minutes": minutes, "faults": list(faults), "seed": seed}
    with contextlib.ExitStack() as stack:
        for leftover in (thrash, journal, config_path):
            stack.callback(leftover.unlink, missing_ok=True)
        group = stack.enter_context(ScratchGroup(64 << 20, name=tag))
        service = (
            stack.enter_context(ScratchGroup(64 << 20, name=f"{tag}-svc"))
            if "regroup" in faults
            else None
        )
        crowd_scope = (
            stack.enter_context(ScratchGroup(None, name=f"{tag}-big"))
            if "biggroup" in faults
            else None
        )
        stuck_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{tag}-")))
        report["idle_event_to_signal_ms"] = summarize(asyncio.run(idle_reaction_ms(group, 5)))
        text = scope_config(
            group.path, group.memcg_path, extra_guard="max_kills_per_minute = 60\n"
        ).replace("mlockall = false", "mlockall = true")
        if service is not None:
            text += extra_scope(service, '[[scopes.policies]]\nname = "oom_score"\n')
        if crowd_scope is not None:
            text += extra_scope(crowd_scope, GROUP_POLICY)
        config = write_config(config_path, text + f'\n[journal]\npath = "{journal}"\n')
        # Bystanders are small (coreutils sleep, about 1 MiB): a wrong victim then means
        # the daemon chose a process that could not be the cause. (Python sleepers of
        # ~10 MiB can outrank a thrasher that has only just started mapping its file:
        # the largest-process rule cannot tell them apart at that instant.)
        bystanders = [
            group.spawn(["sleep", "infinity"], stdout=subprocess.DEVNULL) for _ in range(2)
        ]
        run = SoakRun(
            config,
            group,
            str(thrash),
            faults=faults,
            service=service,
            crowd_scope=crowd_scope,
            stuck_dir=stuck_dir,
            rng=random.Random(seed),
        )
        report.update(run.run(minutes))
        report["bystanders_alive"] = all(b.poll() is None for b in bystanders)
        report["bystander_returncodes"] = [b.poll() for b in bystanders]
    return report


@dataclass
class FaultTally:
    injected: int = 0
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    context: list[list[str]] = field(default_factory=list)


class FaultFailed(Exception):
    """A fault's check did not hold (the message says which)."""


class SoakRun:
    def __init__(
        self,
        config: Path,
        group: ScratchGroup,
        thrash: str,
        *,
        faults: tuple[str, ...],
        service: ScratchGroup | None,
        crowd_scope: ScratchGroup | None,
        stuck_dir: Path,
        rng: random.Random,
    ) -> None:
        self.config = config
        self.group = group
        self.thrash = thrash
        self.faults = faults
        self.service = service
        self.crowd_scope = crowd_scope
        self.stuck_dir = stuck_dir
        self.rng = rng
        self.daemons: list[Daemon] = []
        self.restarts = 0
        self.thrashers: set[int] = set()
        self.victim_groups: set[str] = set()
        self.reactions: list[float] = []
        self.exits: list[float] = []
        self.relieved = self.unrelieved = self.episodes = 0
        self.tally = {name: FaultTally() for name in faults}

    # -- the daemon ---------------------------------------------------------------------------
    @property
    def daemon(self) -> Daemon:
        return self.daemons[-1]

    def start_daemon(self) -> Daemon:
        # The seam is installed only when the "stuck" fault may use it.
        env = {STUCK_DIR_ENV: str(self.stuck_dir)} if "stuck" in self.faults else {}
        if "biggroup" in self.faults:
            env[NOFILE_ENV] = str(NOFILE_SOFT)
        daemon = Daemon(self.config, env=env)
        daemon.argv[1:3] = ["-m", "benchmarks.soak_daemon"]
        daemon.__enter__()
        self.daemons.append(daemon)
        daemon.wait_for("controller.ready", 60)
        return daemon

    def ensure_daemon(self) -> None:
        """A daemon that died is counted (must stay 0) and started again, so the soak goes on."""
        proc = self.daemon.proc
        if proc is not None and proc.poll() is not None:
            self.restarts += 1
            print(f"daemon died (exit {proc.returncode}): restarted", flush=True)
            self.start_daemon()

    def lines(self) -> Iterator[LogLine]:
        for daemon in self.daemons:
            yield from daemon.lines

    def http_url(self) -> str | None:
        for line in self.daemon.lines:
            if line.get("event") == "ops.listening":
                return str(line["url"])
        return None

    # -- the run ------------------------------------------------------------------------------
    def run(self, minutes: float) -> dict[str, Any]:
        deadline = time.monotonic() + minutes * 60
        try:
            self.start_daemon()
            start: dict[str, int] | None = None
            while time.monotonic() < deadline:
                self.ensure_daemon()
                if self.faults and self.rng.random() < FAULT_CHANCE and start is not None:
                    self.fault(self.rng.choice(self.faults))
                else:
                    self.episode(self.group)
                if start is None:
                    # The baseline is the daemon after its first episode: its threads exist
                    # and its scopes keep one scan file open per process in scope (bounded
                    # state, not a leak), so growth from here on is what a leak would be.
                    pid = self.daemon.proc.pid if self.daemon.proc else 0
                    start = proc_figures(pid)
                left = max(0.0, deadline - time.monotonic())
                print(f"{left / 60:.1f} min left", flush=True)
                # Let the episode's window close, so every episode starts from a trigger event.
                time.sleep(EPISODE_GAP_S)
            self.ensure_daemon()
            pid = self.daemon.proc.pid if self.daemon.proc else 0
            end = proc_figures(pid)
            start = start or end
            code = self.daemon.stop(30)
        finally:
            for daemon in self.daemons:
                daemon.__exit__(None, None, None)
        return self.report(start, end, code)

    def episode(self, group: ScratchGroup, cgroup: Cgroup | None = None) -> bool:
        """One thrasher, waited for until killed; True when relieved."""
        self.episodes += 1
        mark = self.daemon.mark()
        self.evict()
        thrasher = group.spawn_workload("thrash", self.thrash, group=cgroup, wait_ready=False)
        self.thrashers.add(thrasher.pid)
        with contextlib.suppress(RuntimeError, TimeoutError):
            # The daemon may kill a thrasher before it says ready (pressure left in the
            # group from the last one): that still counts, by the kill line below.
            wait_for_ready(thrasher, 30)
        try:
            line = self.daemon.wait_for(
                KILL_LINES, EPISODE_TIMEOUT_S, lambda ln: ln.get("pid") is not None, after=mark
            )
        except (TimeoutError, RuntimeError):
            self.unrelieved += 1
            thrasher.kill()
            thrasher.wait()
            print(f"episode {self.episodes}: not relieved in {EPISODE_TIMEOUT_S:.0f} s", flush=True)
            return False
        right: bool = line["pid"] == thrasher.pid
        if not right:
            thrasher.kill()
        else:
            self.relieved += 1
            self.reactions.append(line["event_to_decision_ms"] + line["decision_to_signal_ms"])
            self.exits.append(line["signal_to_exit_ms"])
        thrasher.wait(15)
        print(
            f"episode {self.episodes} in {group.path}: killed pid {line['pid']} "
            f"({'thrasher' if right else 'WRONG VICTIM'}), "
            f"event->signal {self.reactions[-1] if self.reactions else 0:.1f} ms",
            flush=True,
        )
        return right

    def evict(self) -> None:
        """Drop the thrash file from the page cache before a thrasher starts. Pages stay
        charged to the group that first read them, even after that group is removed (the
        regroup fault does that): a thrasher elsewhere then finds them resident, never
        faults, and no pressure comes (seen in a 20-minute fault soak: episodes after a
        regroup made no pressure event at all)."""
        evict_from_cache(self.thrash)

    def fault(self, name: str) -> None:
        tally = self.tally[name]
        tally.injected += 1
        action: Callable[[], None] = getattr(self, "fault_" + name.replace("-", "_"))
        mark = self.daemon.mark()
        try:
            action()
        except (FaultFailed, TimeoutError, RuntimeError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            tally.failures.append(error[:300])
            # The daemon's side of it: every line logged while the fault ran, in short.
            tally.context.append([_brief(line) for line in self.daemon.lines[mark:]][-60:])
            print(f"fault {name}: FAILED ({error})"[:300], flush=True)
            return
        tally.passed += 1
        print(f"fault {name}: ok", flush=True)

    # -- the faults ---------------------------------------------------------------------------
    def fault_regroup(self) -> None:
        service = self.service
        assert service is not None  # made when the fault is enabled
        mark = self.daemon.mark()
        service.close()  # kills what is left inside and removes the groups (v2 and v1)

        def here(line: LogLine) -> bool:
            return line.get("scope") == service.path

        self.daemon.wait_for("scope.gone", 10, here, after=mark)
        self.daemon.wait_for("watchdog.scope_gone", 10, here, after=mark)
        time.sleep(self.rng.uniform(0.2, 2.0))
        service.__enter__()  # the same path again, limit included
        self.daemon.wait_for("scope.back", 10, here, after=mark)
        self.daemon.wait_for("watchdog.rearmed", 10, here, after=mark)
        if not self.episode(service):
            raise FaultFailed("the episode in the re-created group was not relieved")

    def fault_threaded(self) -> None:
        domain = self.group.child("soak-domain")
        threaded = domain.directory / "threaded"
        sleeper = None
        try:
            threaded.mkdir()
            (threaded / "cgroup.type").write_text("threaded")
            sleeper = self.group.spawn(
                ["sleep", "infinity"], group=domain, stdout=subprocess.DEVNULL
            )
            mark = self.daemon.mark()
            relieved = self.episode(self.group)
            crashed = [ln for ln in self.daemon.lines[mark:] if ln.get("event") == "task.crashed"]
            if not relieved or crashed:
                raise FaultFailed(f"relieved={relieved}, task crashes={len(crashed)}")
        finally:
            if sleeper is not None:
                sleeper.kill()
                sleeper.wait()
            self._remove_child(domain, threaded)

    def _remove_child(self, child: Cgroup, *inner: Path) -> None:
        for directory in (*inner, child.directory):
            with contextlib.suppress(FileNotFoundError):
                directory.rmdir()
        if child.memcg_v1_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.group.layout.v1_dir("memory", child.memcg_v1_path).rmdir()

    def fault_stuck(self) -> None:
        stuck = self.group.spawn(["sleep", "infinity"], stdout=subprocess.DEVNULL)
        marker = self.stuck_dir / str(stuck.pid)
        marker.touch()
        try:
            if not self.episode(self.group):
                raise FaultFailed("not relieved while a command-line read hangs")
        finally:
            marker.unlink(missing_ok=True)
            stuck.kill()
            stuck.wait()

    def fault_biggroup(self) -> None:
        scope = self.crowd_scope
        assert scope is not None  # made when the fault is enabled
        crowd = scope.child("crowd")
        self.victim_groups.add(crowd.path)
        fds_before = proc_figures(self.daemon.proc.pid)["fds"] if self.daemon.proc else 0
        mark = self.daemon.mark()
        shell = scope.spawn(
            ["/bin/sh", "-c", f"for i in $(seq {CROWD}); do sleep infinity & done; wait"],
            group=crowd,
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while len(crowd.all_members()) < CROWD + 1:
                if time.monotonic() > deadline:
                    raise FaultFailed("the crowd did not gather in 120 s")
                time.sleep(0.2)
            # Room for the crowd plus 48 MiB: the thrasher in it stalls the group at once.
            scope.set_limit(scope.usage_bytes() + (48 << 20))
            self.evict()
            thrasher = scope.spawn_workload("thrash", self.thrash, group=crowd, wait_ready=False)
            self.thrashers.add(thrasher.pid)
            line = self.daemon.wait_for(
                KILL_LINES, 60, lambda ln: ln.get("cgroup") == crowd.path, after=mark
            )
            deadline = time.monotonic() + 30
            while crowd.all_members():
                if time.monotonic() > deadline:
                    raise FaultFailed(f"{len(crowd.all_members())} members left after the kill")
                time.sleep(0.1)
            shell.wait(10)
            thrasher.wait(10)
            time.sleep(1.0)  # let the daemon close what the kill opened
            fds_after = proc_figures(self.daemon.proc.pid)["fds"] if self.daemon.proc else 0
            if fds_after > fds_before + 2:
                raise FaultFailed(f"daemon fds {fds_before} -> {fds_after} after the group kill")
            print(f"biggroup: killed {line.get('target')}, fds {fds_before} -> {fds_after}")
        finally:
            with contextlib.suppress(OSError):
                crowd.kill()
            scope.set_limit(1 << 40)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if not crowd.all_members():
                        break
                except OSError:
                    break
                time.sleep(0.1)
            self._remove_child(crowd)

    def fault_sighup(self) -> None:
        mark = self.daemon.mark()
        for _ in range(self.rng.randint(5, 20)):
            self.daemon.signal(signal.SIGHUP)
            time.sleep(self.rng.uniform(0.0, 0.1))
        self.daemon.wait_for("config.reloaded", 15, after=mark)
        time.sleep(2.0)  # reloads queued behind each other finish
        proc = self.daemon.proc
        if proc is None or proc.poll() is not None:
            raise FaultFailed("the daemon died in the SIGHUP storm")
        if not self.episode(self.group):
            raise FaultFailed("the episode after the storm was not relieved")

    def fault_idle_http(self) -> None:
        url = self.http_url()
        if url is None:
            raise FaultFailed("no HTTP endpoint")
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        idle = []
        try:
            for _ in range(IDLE_CONNECTIONS):
                idle.append(socket.create_connection((host, int(port)), timeout=5))
            time.sleep(1.0)
            try:
                # The daemon's own http:// URL, from its log line.
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:  # noqa: S310
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except (urllib.error.URLError, TimeoutError) as exc:
                raise FaultFailed(f"/healthz did not answer: {exc}") from None
            if status != 200:
                raise FaultFailed(
                    f"/healthz answered {status} with {IDLE_CONNECTIONS} idle clients"
                )
        finally:
            for connection in idle:
                connection.close()

    # -- the report ---------------------------------------------------------------------------
    def report(self, start: dict[str, int], end: dict[str, int], code: int) -> dict[str, Any]:
        lines = list(self.lines())
        kills = [ln for ln in lines if ln.get("event") in (*KILL_LINES, "watchdog.killed")]

        def wrong(line: LogLine) -> bool:
            if line.get("kind") == "cgroup":
                return line.get("cgroup") not in self.victim_groups
            return line.get("pid") not in self.thrashers

        wrong_lines = [line for line in kills if wrong(line)]
        wrong_context = [
            line
            for line in lines
            if line.get("event") in ("pressure.event", "policy.decided", *KILL_LINES)
            and any(abs(_ts(line) - _ts(w)) < 1.0 for w in wrong_lines)
        ]
        other_kills = [
            {"event": line["event"], "pid": line.get("pid"), "comm": line.get("comm")}
            for line in lines
            if line.get("event", "").startswith(("watchdog.killed", "victim."))
            and line.get("event") not in KILL_LINES
        ]
        timed = [ln for ln in kills if isinstance(ln.get("event_to_decision_ms"), int | float)]
        slowest = max(timed, key=lambda line: float(line["event_to_decision_ms"]), default=None)
        return {
            "episodes": self.episodes,
            "relieved": self.relieved,
            "kills": len(kills),
            "wrong_victims": len(wrong_lines),
            "wrong_victim_pids": [line.get("pid") or line.get("cgroup") for line in wrong_lines],
            "wrong_victim_context": wrong_context,
            "unrelieved": self.unrelieved,
            "daemon_restarts": self.restarts,
            "daemon_start": start,
            "daemon_end": end,
            "daemon_exit_code": code,
            "task_crashes": sum(1 for line in lines if line.get("event") == "task.crashed"),
            "other_kill_lines": other_kills,
            "longest_event_to_decision_ms": (
                round(float(slowest["event_to_decision_ms"]), 3) if slowest else None
            ),
            "longest_event_to_decision_of": (
                f"{slowest.get('scope')}: {slowest.get('target')}" if slowest else None
            ),
            "pressure_event_to_signal_ms": summarize(self.reactions),
            "signal_to_exit_ms": summarize(self.exits),
            "fault_results": {
                name: {
                    "injected": t.injected,
                    "passed": t.passed,
                    "failures": t.failures,
                    "failure_logs": t.context,
                    **({"needs": NEEDS[name]} if name in NEEDS else {}),
                }
                for name, t in self.tally.items()
            },
        }


_BRIEF_KEYS = ("scope", "level", "source", "pid", "cgroup", "target", "reason", "error", "task")


def _brief(line: LogLine) -> str:
    """One log line in short: its time, event and the fields that say what happened."""
    fields = " ".join(f"{key}={line[key]}" for key in _BRIEF_KEYS if line.get(key) is not None)
    return f"{str(line.get('timestamp', ''))[11:23]} {line.get('event')} {fields}"[:240]


def _ts(line: dict[str, Any]) -> float:
    """A log line's time in seconds (ISO timestamp from structlog)."""
    from datetime import datetime

    stamp = str(line.get("timestamp", ""))
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def parse_faults(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if value in ("", "all"):
        return FAULTS
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name not in FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault(s) {unknown}; known: {list(FAULTS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--faults",
        nargs="?",
        const="all",
        default=None,
        type=parse_faults,
        metavar="NAME[,NAME...]",
        help=f"inject faults at random: all of them, or those named ({', '.join(FAULTS)})",
    )
    parser.add_argument("--seed", type=int, default=None, help="for the fault choices")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/var/tmp"),
        help="for the thrash file (a disk, not tmpfs)",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    # SIGTERM unwinds like Ctrl-C, so the cgroups, thrash file and processes are removed.
    with sigterm_as_interrupt():
        report = soak(args.minutes, args.workdir, args.faults or (), seed)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    faults_ok = all(not r["failures"] for r in report["fault_results"].values())
    ok = (
        report["wrong_victims"] == 0
        and report["unrelieved"] == 0
        and report["daemon_restarts"] == 0
        and report["daemon_exit_code"] == 0
        and faults_ok
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
