"""Print memory-pressure events for a cgroup (or the system) as they happen.

    python examples/watch.py                 # this process's own cgroup
    python examples/watch.py --cgroup /jobs  # a cgroup v2 path
    python examples/watch.py --cgroup system # /proc/pressure/memory

Works on the stdlib loop or uvloop (``--uvloop``). Ctrl-C stops it and closes every fd.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import pressured
from pressured.config import LevelSettings


async def main(cgroup: str, threshold_ms: float, window_ms: float, count: int | None) -> int:
    levels = (
        LevelSettings(name="some", kind="some", threshold_ms=threshold_ms, window_ms=window_ms),
    )
    async with pressured.watch(cgroup, levels=levels) as events:
        for armed in events.armed:
            note = (
                f" (asked {armed.requested}: {armed.adjustment.reason})" if armed.adjustment else ""
            )
            print(f"watching {armed.path}: {armed.effective}{note}", flush=True)
        seen = 0
        async for event in events:
            seen += 1
            stamp = time.strftime("%H:%M:%S")
            print(f"{stamp} {event.scope}: {event.level} pressure ({event.trigger})", flush=True)
            if count is not None and seen >= count:
                break
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print memory-pressure events.")
    parser.add_argument(
        "--cgroup",
        default="own",
        help="cgroup v2 path, 'system', or 'own' (default: this process's)",
    )
    parser.add_argument("--threshold-ms", type=float, default=100.0)
    parser.add_argument("--window-ms", type=float, default=2000.0)
    parser.add_argument("--count", type=int, default=None, help="exit after this many events")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    coro = main(args.cgroup, args.threshold_ms, args.window_ms, args.count)
    try:
        if args.uvloop:
            import uvloop

            sys.exit(uvloop.run(coro))
        sys.exit(asyncio.run(coro))
    except KeyboardInterrupt:
        sys.exit(130)
