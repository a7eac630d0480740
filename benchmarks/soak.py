"""Soak: repeated real pressure episodes against one long-running ``pressured run``.

    python3 -m benchmarks.soak --minutes 30          # the full soak
    python3 -m benchmarks.soak --minutes 2           # the CI version (tests/test_soak.py)

A scratch cgroup (64 MiB) holds two small bystanders for the whole run. Each episode starts a
page-cache thrasher there and waits for the daemon's kill. The report counts episodes
relieved, wrong victims (anything killed but the thrasher: must be 0), episodes not relieved
within 30 s, and the daemon's open fds, RSS and locked memory at start and end. It also shows
the reaction (trigger event -> SIGKILL sent) under real pressure, with the daemon's memory
locked, beside the same figure for a manual event on a quiet group measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import sigterm_as_interrupt
from pressured.config import Settings
from pressured.controller import Controller
from pressured.events import EventSource, PressureEvent
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup, make_thrash_file, wait_for_ready

EPISODE_TIMEOUT_S = 30.0
EPISODE_GAP_S = 3.0


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


def soak(minutes: float, workdir: Path) -> dict[str, Any]:
    thrash = make_thrash_file(workdir / f"pressured-soak-{os.getpid()}.bin", 512 << 20)
    report: dict[str, Any] = {"minutes": minutes}
    try:
        with ScratchGroup(64 << 20, name=f"pressured-soak-{os.getpid()}") as group:
            report["idle_event_to_signal_ms"] = summarize(asyncio.run(idle_reaction_ms(group, 5)))
            journal = workdir / f"pressured-soak-{os.getpid()}.jsonl"
            config = write_config(
                workdir / f"pressured-soak-{os.getpid()}.toml",
                scope_config(
                    group.path, group.memcg_path, extra_guard="max_kills_per_minute = 60\n"
                ).replace("mlockall = false", "mlockall = true")
                + f'\n[journal]\npath = "{journal}"\n',
            )
            # Bystanders are small (coreutils sleep, about 1 MiB): a wrong victim then means
            # the daemon chose a process that could not be the cause. (Python sleepers of
            # ~10 MiB can outrank a thrasher that has only just started mapping its file:
            # the largest-process rule cannot tell them apart at that instant.)
            bystanders = [
                group.spawn(["sleep", "infinity"], stdout=subprocess.DEVNULL) for _ in range(2)
            ]
            report.update(run_episodes(config, group, str(thrash), minutes, bystanders))
    finally:
        for leftover in (
            thrash,
            workdir / f"pressured-soak-{os.getpid()}.jsonl",
            workdir / f"pressured-soak-{os.getpid()}.toml",
        ):
            leftover.unlink(missing_ok=True)
    return report


def run_episodes(
    config: Path, group: ScratchGroup, thrash: str, minutes: float, bystanders: list[Any]
) -> dict[str, Any]:
    relieved = unrelieved = 0
    thrashers: set[int] = set()
    reactions: list[float] = []
    exits: list[float] = []
    deadline = time.monotonic() + minutes * 60
    with Daemon(config) as daemon:
        daemon.wait_for("controller.ready", 30)
        if daemon.proc is None:
            raise RuntimeError("daemon did not start")
        pid = daemon.proc.pid
        start = proc_figures(pid)
        episode = 0
        while time.monotonic() < deadline:
            episode += 1
            mark = daemon.mark()
            thrasher = group.spawn_workload("thrash", thrash, wait_ready=False)
            thrashers.add(thrasher.pid)
            with contextlib.suppress(RuntimeError):
                # The daemon may kill a thrasher before it says ready (pressure left in the
                # group from the last one): that still counts, by the kill line below.
                wait_for_ready(thrasher, 30)
            try:
                line = daemon.wait_for("victim.killed", EPISODE_TIMEOUT_S, after=mark)
            except TimeoutError:
                unrelieved += 1
                thrasher.kill()
                thrasher.wait()
                print(f"episode {episode}: not relieved in {EPISODE_TIMEOUT_S:.0f} s", flush=True)
                continue
            if line["pid"] != thrasher.pid:
                thrasher.kill()
            else:
                relieved += 1
                reactions.append(line["event_to_decision_ms"] + line["decision_to_signal_ms"])
                exits.append(line["signal_to_exit_ms"])
            thrasher.wait(15)
            left = max(0.0, deadline - time.monotonic())
            print(
                f"episode {episode}: killed pid {line['pid']} "
                f"({'thrasher' if line['pid'] == thrasher.pid else 'WRONG VICTIM'}), "
                f"event->signal {reactions[-1] if reactions else 0:.1f} ms, "
                f"{left / 60:.1f} min left",
                flush=True,
            )
            # Let the episode's window close, so every episode starts from a trigger event.
            time.sleep(EPISODE_GAP_S)
        end = proc_figures(pid)
        code = daemon.stop(30)
        # Every kill of the whole run, including any between episodes: each must be a thrasher.
        wrong_lines = [
            line
            for line in [*daemon.events("victim.killed"), *daemon.events("watchdog.killed")]
            if line.get("pid") not in thrashers
        ]
        wrong_kills = [line["pid"] for line in wrong_lines]
        # The evidence behind each wrong kill: its pressure event and decision lines.
        wrong_context = [
            line
            for line in daemon.lines
            if line.get("event") in ("pressure.event", "policy.decided", "victim.killed")
            and any(abs(_ts(line) - _ts(w)) < 1.0 for w in wrong_lines)
        ]
        other_kills = [
            {"event": line["event"], "pid": line.get("pid"), "comm": line.get("comm")}
            for line in daemon.lines
            if line.get("event", "").startswith(("watchdog.killed", "victim."))
            and line.get("event") != "victim.killed"
        ]
    return {
        "episodes": episode,
        "relieved": relieved,
        "wrong_victims": len(wrong_kills),
        "wrong_victim_pids": wrong_kills,
        "wrong_victim_context": wrong_context,
        "unrelieved": unrelieved,
        "bystanders_alive": all(b.poll() is None for b in bystanders),
        "bystander_returncodes": [b.poll() for b in bystanders],
        "daemon_start": start,
        "daemon_end": end,
        "daemon_exit_code": code,
        "other_kill_lines": other_kills,
        "pressure_event_to_signal_ms": summarize(reactions),
        "signal_to_exit_ms": summarize(exits),
    }


def _ts(line: dict[str, Any]) -> float:
    """A log line's time in seconds (ISO timestamp from structlog)."""
    from datetime import datetime

    stamp = str(line.get("timestamp", ""))
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/var/tmp"),
        help="for the thrash file (a disk, not tmpfs)",
    )
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the cgroups, thrash file and processes are removed.
    with sigterm_as_interrupt():
        report = soak(args.minutes, args.workdir)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    ok = (
        report["wrong_victims"] == 0
        and report["unrelieved"] == 0
        and report["daemon_exit_code"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
