"""Spawn many small sleeping processes cheaply: ``python3 sleepers.py SLEEPERS VICTIMS``.

Run inside a scratch cgroup: every child inherits the group. Children are ``sleep`` programs
started with ``posix_spawn`` (vfork + exec: about 0.4 ms and 90 KiB each, where forking this
Python interpreter costs about 1 MiB each in copied pages). Victims get ``oom_score_adj``
1000 so the ``oom_score`` policy chooses them first. SIGCHLD is ignored, so killed children
are reaped by the kernel at once and never linger as zombies in the next scan.

Prints one JSON line ``{"victims": [...], "sleepers": N}`` then ``ready``, and sleeps until
killed (its scratch group's ``cgroup.kill`` ends it and every child).
"""

from __future__ import annotations

import json
import os
import signal
import sys

SLEEP = ["/bin/sleep", "infinity"]


def main() -> None:
    sleepers, victims = int(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    env = {"PATH": "/usr/bin:/bin"}
    reset = [signal.SIGCHLD]
    for _ in range(sleepers):
        os.posix_spawn(SLEEP[0], SLEEP, env, setsigdef=reset)
    chosen = []
    for _ in range(victims):
        pid = os.posix_spawn(SLEEP[0], SLEEP, env, setsigdef=reset)
        with open(f"/proc/{pid}/oom_score_adj", "w", encoding="ascii") as handle:
            handle.write("1000")
        chosen.append(pid)
    sys.stdout.write(json.dumps({"victims": chosen, "sleepers": sleepers}) + "\nready\n")
    sys.stdout.flush()
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
