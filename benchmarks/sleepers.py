"""Spawn many small sleeping processes cheaply: ``python3 sleepers.py SLEEPERS VICTIMS``.

Run inside a scratch cgroup: every child inherits the group. Children are ``sleep`` programs
started with ``posix_spawn`` (vfork + exec: about 0.4 ms and 90 KiB each, where forking this
Python interpreter costs about 1 MiB each in copied pages), each in a process group of its
own, as services and jobs are: every process is a family of its own for the ``culprit``
policy, the most families a scope of this size can hold. Victims are Python processes
holding 16 MiB (larger than any other family, so ``culprit``'s size rule picks them on a
quiet scope) with ``oom_score_adj`` 1000 (so the ``oom_score`` policy chooses them first).
SIGCHLD is ignored, so killed children are reaped by the kernel at once and never linger as
zombies in the next scan.

Prints one JSON line ``{"victims": [...], "sleepers": N}`` then ``ready`` once every victim
holds its memory, and sleeps until killed (its scratch group's ``cgroup.kill`` ends it and
every child).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

SLEEP = ["/bin/sleep", "infinity"]
VICTIM_MIB = 16
VICTIM = [sys.executable, "-c", f"import signal; b = b'x' * ({VICTIM_MIB} << 20); signal.pause()"]


def _resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def main() -> None:
    sleepers, victims = int(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    env = {"PATH": "/usr/bin:/bin"}
    reset = [signal.SIGCHLD]
    for _ in range(sleepers):
        os.posix_spawn(SLEEP[0], SLEEP, env, setsigdef=reset, setpgroup=0)
    chosen = []
    for _ in range(victims):
        pid = os.posix_spawn(VICTIM[0], VICTIM, env, setsigdef=reset, setpgroup=0)
        with open(f"/proc/{pid}/oom_score_adj", "w", encoding="ascii") as handle:
            handle.write("1000")
        chosen.append(pid)
    deadline = time.monotonic() + 60
    while any(_resident_bytes(pid) < VICTIM_MIB << 20 for pid in chosen):
        if time.monotonic() > deadline:
            raise SystemExit("victims did not take their memory within 60 s")
        time.sleep(0.01)
    sys.stdout.write(json.dumps({"victims": chosen, "sleepers": sleepers}) + "\nready\n")
    sys.stdout.flush()
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
