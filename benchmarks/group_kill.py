"""Group kill: fds and time for a cgroup victim of N members, two ways, in one run.

    python3 -m benchmarks.group_kill --members 1000 5000

* ``bounded`` (what the actuator does): pidfds for the 16 largest members only, opened before
  ``cgroup.kill``, mrelease of those, then ``cgroup.events`` watched for ``populated 0``.
* ``per-member`` (the baseline, the old way): a pidfd for every member, ``cgroup.kill``,
  mrelease of each, then a wait on every pidfd.

For each: peak open fds of this process during the kill (sampled every millisecond by a
thread), kill -> group empty (bounded) or -> all pidfds readable (per-member), and the open fds
after. Needs root and cgroup2. Member processes are forked sleepers (no exec).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time

from benchmarks.common import Config, Progress, Section, Table, Target, load_average
from pressured.actuator import GROUP_MRELEASE_MEMBERS, wait_group_empty
from pressured.deathwatch import wait_exited
from pressured.kernel import pidfd
from pressured.kernel.cgroupfs import Cgroup
from pressured.reaper import kill_and_release_group
from pressured.testing.scratch import FORK_SLEEPERS, ScratchGroup, wait_for_ready

WAYS = ("bounded", "per-member")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class PeakFds:
    """The largest open-fd count seen while the block runs."""

    def __init__(self) -> None:
        self.peak = open_fds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, open_fds())

    def __enter__(self) -> PeakFds:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def populate(scratch: ScratchGroup, name: str, members: int) -> Cgroup:
    group = scratch.child(name)
    proc = scratch.spawn([sys.executable, "-c", FORK_SLEEPERS, str(members - 1)], group=group)
    wait_for_ready(proc, 600)
    return group


async def bounded(group: Cgroup) -> float:
    fds = []
    try:
        for pid in group.all_members()[:GROUP_MRELEASE_MEMBERS]:
            fds.append((pid, pidfd.open_pidfd(pid)))
        outcome = kill_and_release_group(group, fds)
    finally:
        for _, fd in fds:
            pidfd.close_quietly(fd)
    empty_ns = await wait_group_empty(group, 300)
    assert empty_ns is not None, "group did not empty"
    return (empty_ns - outcome.signal_ns) / 1e6


async def per_member(group: Cgroup) -> float:
    fds = []
    try:
        for pid in group.all_members():
            fds.append((pid, pidfd.open_pidfd(pid)))
        outcome = kill_and_release_group(group, fds)
        exits = await asyncio.gather(*(wait_exited(fd, 300) for _, fd in fds))
    finally:
        for _, fd in fds:
            pidfd.close_quietly(fd)
    assert all(ns is not None for ns in exits), "a member did not exit"
    return (max(ns for ns in exits if ns is not None) - outcome.signal_ns) / 1e6


def measure(members: int, way: str) -> tuple[int, int, int, float]:
    """(fds before, peak, after, kill -> gone ms) for one group of ``members`` killed ``way``."""
    kill = bounded if way == "bounded" else per_member
    with ScratchGroup(None) as scratch:
        group = populate(scratch, "bench", members)
        before = open_fds()
        with PeakFds() as peak:
            gone_ms = asyncio.run(kill(group))
        return before, peak.peak, open_fds(), gone_ms


def run(config: Config, progress: Progress) -> Section:
    """The suite's section: both ways at each size in ``config.group_kill_members``."""
    from pressured.testing.scratch import scratch_unavailable_reason

    section = Section("group_kill")
    reason = scratch_unavailable_reason()
    if reason:
        section.skipped = reason
        return section
    started = time.monotonic()
    load_before = load_average()
    table = Table(
        "group_kill",
        "Group kill: open fds and kill -> group empty for an N-member cgroup victim",
        ["members", "way", "fds before", "peak fds", "fds after", "kill -> gone (ms)"],
    )
    raw: list[dict[str, int | float | str]] = []
    for members in config.group_kill_members:
        for way in WAYS:
            progress("group_kill", f"{members} members, {way}")
            before, peak, after, gone_ms = measure(members, way)
            table.rows.append(
                [f"{members:,}", way, str(before), str(peak), str(after), f"{gone_ms:.1f}"]
            )
            raw.append(
                {
                    "members": members,
                    "way": way,
                    "before": before,
                    "peak": peak,
                    "after": after,
                    "gone_ms": gone_ms,
                }
            )
    table.notes.append(
        "bounded (what the actuator does): pidfds for the 16 largest members, cgroup.kill, "
        "then cgroup.events; per-member (the old way, the baseline): one pidfd per member"
    )
    bounded_runs = [r for r in raw if r["way"] == "bounded"]
    section.targets.append(
        Target(
            "group_kill",
            "open fds back at their baseline after a group kill (bounded way, every size)",
            ", ".join(f"{r['members']:,}: {r['before']} -> {r['after']}" for r in bounded_runs),
            all(r["after"] == r["before"] for r in bounded_runs) if bounded_runs else None,
        )
    )
    section.tables = [table]
    section.notes = [f"group kill: load average before {load_before}, after {load_average()}"]
    section.raw = {"runs": raw}
    section.duration_s = time.monotonic() - started
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.group_kill", description=__doc__)
    parser.add_argument("--members", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args(argv)
    print(f"load {os.getloadavg()[0]:.2f}; soft RLIMIT_NOFILE must exceed the largest N for the")
    print("per-member baseline (it is the limit that the bounded way does not need)")
    print(
        f"{'members':>8} {'way':>10} {'fds before':>10} {'peak':>6} {'after':>6} {'kill->gone':>11}"
    )
    for members in args.members:
        for way in WAYS:
            before, peak, after, gone_ms = measure(members, way)
            print(f"{members:>8} {way:>10} {before:>10} {peak:>6} {after:>6} {gone_ms:>9.1f}ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
