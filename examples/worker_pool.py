"""An asyncio application that sheds load under memory pressure, using pressured as a library.

It runs worker subprocesses in a cgroup of its own with a memory limit. When the kernel
reports memory pressure in that cgroup (``pressured.watch``), it kills and reaps its largest
worker at once (``pressured.kill_and_reap`` on a shared, pinned ``Reaper``) and lowers the
number of workers it keeps running; after a quiet spell it lets the number grow again.

Run as root (it creates a cgroup)::

    python examples/worker_pool.py --workers 3 --limit-mib 48 --duration 60

Each worker maps a 256 MiB data file and reads it over and over (a crawler re-reading its
corpus), so three of them in 48 MiB thrash the page cache and stall on memory within seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pressured
from pressured.kernel import procfs
from pressured.testing.scratch import ScratchGroup, make_thrash_file

DATA_FILE = "/var/tmp/pressured-worker-pool.bin"
SETTLE_S = 1.0


def log(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": round(time.monotonic(), 3), **fields}), flush=True)


@dataclass
class Pool:
    group: ScratchGroup
    data_file: str
    target: int
    minimum: int
    maximum: int
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    kills: int = 0
    started: int = 0

    def spawn(self) -> None:
        proc = self.group.spawn_workload("thrash", self.data_file, wait_ready=False)
        self.workers[proc.pid] = proc
        self.started += 1
        log("worker.started", pid=proc.pid, running=len(self.workers), target=self.target)

    def reap_exited(self) -> None:
        for pid, proc in list(self.workers.items()):
            if proc.poll() is not None:  # also collects the zombie of a killed worker
                del self.workers[pid]

    def top_up(self) -> None:
        self.reap_exited()
        while len(self.workers) < self.target:
            self.spawn()

    def largest(self) -> int | None:
        sizes = {}
        for pid in self.workers:
            try:
                sizes[pid] = procfs.read_process(pid).memory_bytes
            except (OSError, ValueError):
                continue
        return max(sizes, key=lambda pid: sizes[pid]) if sizes else None


async def shed_on_pressure(
    pool: Pool, reaper: pressured.Reaper, quiet_s: float, stop_after_kills: int | None
) -> None:
    async with pressured.watch(pool.group.path) as events:
        for armed in events.armed:
            log("trigger.armed", level=armed.level, trigger=str(armed.effective))
        last_kill = 0.0
        while stop_after_kills is None or pool.kills < stop_after_kills:
            try:
                event = await asyncio.wait_for(anext(events), quiet_s)
            except TimeoutError:
                if pool.target < pool.maximum:
                    pool.target += 1
                    log("pool.grow", target=pool.target, reason=f"no pressure for {quiet_s} s")
                    pool.top_up()
                continue
            log("pressure.event", level=event.level, trigger=str(event.trigger))
            if time.monotonic() - last_kill < SETTLE_S:
                # Both levels often fire on the same tick: one kill per episode step, then
                # give the freed memory a moment to show before judging again.
                log("pool.settling", detail=f"a worker was killed < {SETTLE_S} s ago")
                continue
            if pool.target <= pool.minimum:
                log("pool.at_minimum", target=pool.target, detail="not killing below minimum")
                continue
            victim = pool.largest()
            if victim is None:
                continue
            pool.target -= 1
            record = await pressured.kill_and_reap(
                victim, reaper=reaper, reason=f"{event.level} pressure"
            )
            pool.kills += 1
            last_kill = time.monotonic()
            pool.reap_exited()
            log(
                "worker.killed",
                pid=victim,
                result=str(record.result),
                rss_mib=round(record.rss_before_bytes / 2**20, 1),
                mrelease=str(record.mrelease.status) if record.mrelease else None,
                signal_to_exit_ms=record.signal_to_exit_ms,
                target=pool.target,
            )


async def main(args: argparse.Namespace) -> int:
    data_file = str(make_thrash_file(args.data_file, 256 << 20))
    with ScratchGroup(args.limit_mib << 20, name=f"worker-pool-{int(time.time())}") as group:
        pool = Pool(group, data_file, target=args.workers, minimum=1, maximum=args.workers)
        log("pool.start", cgroup=group.path, limit_mib=args.limit_mib, workers=args.workers)
        # One reaper for the application's lifetime, pinned to the last CPU, created before
        # any pressure: a kill never waits for a thread to be born.
        with pressured.Reaper(cpus=args.reaper_cpus) as reaper:
            pool.top_up()
            try:
                async with asyncio.timeout(args.duration):
                    await shed_on_pressure(pool, reaper, args.quiet_s, args.stop_after_kills)
            except TimeoutError:
                pass
        log("pool.stop", kills=pool.kills, started=pool.started, target=pool.target)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--workers", type=int, default=3, help="workers to start with")
    parser.add_argument("--limit-mib", type=int, default=48, help="the pool cgroup's limit")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    parser.add_argument(
        "--quiet-s",
        type=float,
        default=10.0,
        help="grow the pool again after this long without pressure",
    )
    parser.add_argument(
        "--stop-after-kills", type=int, default=None, help="exit once this many workers were killed"
    )
    parser.add_argument(
        "--data-file",
        default=DATA_FILE,
        help="the workers' corpus (made once, 256 MiB; must be on a disk, "
        "not tmpfs, so its page cache can be reclaimed)",
    )
    parser.add_argument(
        "--reaper-cpus",
        type=int,
        nargs="*",
        default=(),
        help="CPUs for the reaper thread (default: all)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
