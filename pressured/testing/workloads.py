"""Small memory workloads for tests and benchmarks: ``python -m pressured.testing.workloads``.

Each prints ``ready`` on stdout once its memory is in place, then runs until killed:

* ``hog MIB``: touch MIB of anonymous memory, then sleep;
* ``thrash PATH``: map PATH and touch every page in a loop (page-cache thrash: under a memcg
  limit smaller than the file this stalls on refaults within seconds);
* ``anon-thrash MIB``: touch MIB of anonymous memory in a loop (needs swap to stall);
* ``sleep``: a small bystander.

``--ignore-term`` makes any of them ignore SIGTERM (for SIGTERM-then-SIGKILL tests).
"""

from __future__ import annotations

import argparse
import mmap
import os
import signal
import sys
import time

PAGE = mmap.PAGESIZE


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


def _touch(buffer: mmap.mmap | bytearray, step: int = PAGE) -> int:
    total = 0
    for offset in range(0, len(buffer), step):
        total += buffer[offset]
    return total


def hog(mib: int) -> None:
    block = bytearray(mib << 20)
    for offset in range(0, len(block), PAGE):
        block[offset] = 1
    _ready()
    while True:
        time.sleep(3600)


def thrash(path: str) -> None:
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
    _ready()
    while True:
        _touch(mapping)


def anon_thrash(mib: int) -> None:
    block = bytearray(mib << 20)
    _ready()
    while True:
        for offset in range(0, len(block), PAGE):
            block[offset] = (block[offset] + 1) & 0xFF


def sleeper() -> None:
    _ready()
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pressured.testing.workloads")
    parser.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM")
    parser.add_argument("--oom-score-adj", type=int, default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hog").add_argument("mib", type=int)
    sub.add_parser("thrash").add_argument("path")
    sub.add_parser("anon-thrash").add_argument("mib", type=int)
    sub.add_parser("sleep")
    args = parser.parse_args(argv)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.oom_score_adj is not None:
        with open(f"/proc/{os.getpid()}/oom_score_adj", "w", encoding="ascii") as handle:
            handle.write(str(args.oom_score_adj))
    if args.command == "hog":
        hog(args.mib)
    elif args.command == "thrash":
        thrash(args.path)
    elif args.command == "anon-thrash":
        anon_thrash(args.mib)
    else:
        sleeper()


if __name__ == "__main__":
    main()
