"""Victim-choice scenarios on the real kernel: who causes the pressure, who merely stands by.

Shared by ``tests/test_scenarios.py`` (each scenario, default chain, asserted) and
``benchmarks/victims.py`` (every scenario with every built-in policy, tabulated). Each scenario
runs in its own :class:`~pressured.testing.scratch.ScratchGroup` with a memory limit, so a
daemon watching that group never sees other work on the machine.

Workloads (``python -m pressured.testing.culprits ...``; each prints ``ready [PIDS]`` once in
place):

* ``impostor PATH``: names itself ``sshd`` (``prctl(PR_SET_NAME)``) and rewrites its command
  line to ``sshd: root@pts/0`` (through ``/proc/self/mem`` over its own argv area), then
  thrashes the page cache over PATH;
* ``grower PATH CAP_MIB``: thrashes PATH while growing its anonymous memory by 1 MiB per
  4 MiB of file touched, up to CAP_MIB;
* ``forker N PATH``: forks N children that each hold 4 MiB and thrash PATH; the parent
  sleeps. Prints ``ready CHILD_PIDS``;
* ``churner PATH LIFE_S``: forks one child at a time that thrashes PATH for LIFE_S seconds
  and exits; the loop itself faults nothing;
* ``reader MIB``: re-reads a file of its own through read(2): no page faults.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import mmap
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pressured.kernel.cgroupfs import Cgroup
from pressured.testing.scratch import WORKLOAD_MODULE, ScratchGroup, read_until

MODULE = "pressured.testing.culprits"
PAGE = mmap.PAGESIZE
PR_SET_NAME = 15
IMPOSTOR_NAME = b"sshd"
IMPOSTOR_CMDLINE = b"sshd: root@pts/0"


# -- workloads ----------------------------------------------------------------------------------
def _ready(*pids: int) -> None:
    sys.stdout.write(" ".join(["ready", *map(str, pids)]) + "\n")
    sys.stdout.flush()


def _thrash_forever(path: str, on_pages: Callable[[int], None] | None = None) -> None:
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
    touched = 0
    while True:
        for offset in range(0, len(mapping), PAGE):
            touched += mapping[offset] & 1
            if on_pages is not None and offset % (1024 * PAGE) == 0:
                on_pages(offset)


def disguise(name: bytes = IMPOSTOR_NAME, cmdline: bytes = IMPOSTOR_CMDLINE) -> None:
    """Rename this process (comm) and overwrite its argv area, as any process may."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    with open("/proc/self/stat", "rb") as handle:
        words = handle.read().rsplit(b")", 1)[1].split()
    arg_start, arg_end = int(words[48 - 3]), int(words[49 - 3])
    size = arg_end - arg_start
    text = cmdline[: size - 1]
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(arg_start)
        mem.write(text + b"\0" * (size - len(text)))


def impostor(path: str) -> None:
    disguise()
    _ready()
    _thrash_forever(path)


def grower(path: str, cap_mib: int) -> None:
    held: list[bytearray] = []

    def grow(_offset: int) -> None:
        if len(held) < cap_mib:
            block = bytearray(1 << 20)
            for index in range(0, len(block), PAGE):
                block[index] = 1
            held.append(block)

    _ready()
    _thrash_forever(path, grow)


def reader(mib: int) -> None:
    """Thrash the page cache with read(2), not mmap: no page faults, only re-reads from disk
    (``read_bytes`` in /proc/PID/io grows by about 1 GiB/s here, minflt by 15/s). The file is
    its own, unlinked from the start (nothing is left behind when it is killed)."""
    chunk = 128 << 10
    with tempfile.TemporaryFile(dir="/var/tmp", prefix="pressured-reader-") as handle:
        block = b"\x01" * chunk
        for _ in range((mib << 20) // chunk):
            handle.write(block)
        handle.flush()
        fd = handle.fileno()
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        _ready()
        while True:
            for offset in range(0, mib << 20, chunk):
                os.pread(fd, chunk, offset)


def _thrash_for(path: str, life_s: float) -> None:
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ)
    touched = 0
    deadline = time.monotonic() + life_s
    while time.monotonic() < deadline:
        for offset in range(0, len(mapping), PAGE * 64):
            touched += mapping[offset] & 1


def churner(path: str, life_s: float) -> None:
    """Fork a child that thrashes ``path`` for ``life_s`` and exits, wait for it, and again, for
    ever: every fault is made by a process younger than a second. Prints ``ready`` with its
    own PID."""
    _ready(os.getpid())
    while True:
        pid = os.fork()
        if pid == 0:
            _thrash_for(path, life_s)
            os._exit(0)
        os.waitpid(pid, 0)


def orphan(path: str, life_s: float) -> None:
    """Leave a child behind that thrashes ``path`` for ``life_s``, and exit at once."""
    if os.fork() == 0:
        _thrash_for(path, life_s)
    os._exit(0)


def forker(children: int, path: str) -> None:
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            block = bytearray(4 << 20)
            for index in range(0, len(block), PAGE):
                block[index] = 1
            _thrash_forever(path)
        pids.append(pid)
    _ready(*pids)
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("impostor").add_argument("path")
    sub.add_parser("reader").add_argument("mib", type=int)
    grow_parser = sub.add_parser("grower")
    grow_parser.add_argument("path")
    grow_parser.add_argument("cap_mib", type=int)
    churn_parser = sub.add_parser("churner")
    churn_parser.add_argument("path")
    churn_parser.add_argument("life_s", type=float)
    orphan_parser = sub.add_parser("orphan")
    orphan_parser.add_argument("path")
    orphan_parser.add_argument("life_s", type=float)
    fork_parser = sub.add_parser("forker")
    fork_parser.add_argument("children", type=int)
    fork_parser.add_argument("path")
    args = parser.parse_args(argv)
    if args.command == "impostor":
        impostor(args.path)
    elif args.command == "reader":
        reader(args.mib)
    elif args.command == "grower":
        grower(args.path, args.cap_mib)
    elif args.command == "churner":
        churner(args.path, args.life_s)
    elif args.command == "orphan":
        orphan(args.path, args.life_s)
    else:
        forker(args.children, args.path)


# -- scenarios ----------------------------------------------------------------------------------
@dataclass
class Staged:
    """A scenario in place: who must die, who must live."""

    culprits: list[int] = field(default_factory=list)
    """PIDs that must all die (the cause)."""
    thrashers: list[int] = field(default_factory=list)
    """The culprits that make the pressure (all of them where empty): relief is when these
    are gone (a forking hog's sleeping parent makes none, though it must die too)."""
    culprit_group: str | None = None
    """Where the cause has its own cgroup: the group a cgroup kill may name."""
    bystanders: dict[str, int] = field(default_factory=dict)
    """Label -> PID of each process that must survive."""


def _read_ready(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> list[int]:
    """Wait for the ``ready [PIDS]`` line and return the PIDS."""
    buffer = read_until(proc, b"\n", timeout_s)
    words = buffer.split(b"\n", 1)[0].split()
    if not words or words[0] != b"ready":
        raise RuntimeError(f"workload {proc.pid} said {buffer!r}")
    return [int(word) for word in words[1:]]


def spawn(
    group: ScratchGroup, *args: str, cgroup: Cgroup | None = None
) -> tuple[subprocess.Popen[bytes], list[int]]:
    proc = group.spawn([sys.executable, "-m", MODULE, *args], group=cgroup)
    return proc, _read_ready(proc)


def spawn_plain(group: ScratchGroup, *args: str) -> int:
    proc = group.spawn([sys.executable, "-m", WORKLOAD_MODULE, *args])
    _read_ready(proc)
    return proc.pid


@dataclass(frozen=True)
class Scenario:
    name: str
    """Short label for the table."""
    description: str
    limit_mib: int
    bystanders: Callable[[ScratchGroup], dict[str, int]]
    """Started before the daemon: the processes that must live."""
    culprit: Callable[[ScratchGroup, str], Staged]
    """Started once the daemon is armed: the cause of the pressure."""


def _impostor(group: ScratchGroup, path: str) -> Staged:
    proc, _ = spawn(group, "impostor", path)
    return Staged(culprits=[proc.pid])


def _grower(group: ScratchGroup, path: str) -> Staged:
    proc, _ = spawn(group, "grower", path, "40")
    return Staged(culprits=[proc.pid])


def _forker(group: ScratchGroup, path: str) -> Staged:
    proc, children = spawn(group, "forker", "8", path)
    return Staged(culprits=[proc.pid, *children], thrashers=children)


def _churner(group: ScratchGroup, path: str) -> Staged:
    proc, _ = spawn(group, "churner", path, "0.5")
    return Staged(culprits=[proc.pid])


def _orphaning_churner(group: ScratchGroup, path: str) -> Staged:
    """A shell loop (a tiny process: its forks copy next to nothing, so it faults next to
    nothing) starting a thrasher that orphans itself and lives half a second, every 0.3 s.
    The loop leads its own session and process group, as a job started from a shell or a
    service does (started by the test runner it would share the runner's group, whose leader
    is out of scope)."""
    orphan = shlex.join([sys.executable, "-m", MODULE, "orphan", path, "0.5"])
    loop = f"echo ready $$; while :; do {orphan}; sleep 0.3; done"
    # Not a group leader, setsid(1) makes this very process one (no fork: the PID stays).
    proc = group.spawn(["setsid", "/bin/sh", "-c", loop])
    _read_ready(proc)
    return Staged(culprits=[proc.pid])


def _forker_in_own_group(group: ScratchGroup, path: str) -> Staged:
    child = group.child("batch")
    proc, children = spawn(group, "forker", "8", path, cgroup=child)
    return Staged(culprits=[proc.pid, *children], thrashers=children, culprit_group=child.path)


def _hog_in_ssh_service(group: ScratchGroup, path: str) -> Staged:
    child = group.child("ssh.service")
    proc, _ = spawn(group, "impostor", path, cgroup=child)
    return Staged(culprits=[proc.pid], culprit_group=child.path)


def _running_reader(group: ScratchGroup, _path: str) -> Staged:
    """The reader started with the bystanders, long before the first event: no birth faults
    to give it away (a reader started after arming counts its start-up faults as demand)."""
    for pid in group.group.all_members():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                words = handle.read().split(b"\0")
        except OSError:
            continue
        if MODULE.encode() in words and b"reader" in words:
            return Staged(culprits=[pid])
    raise RuntimeError("the reader started with the bystanders is gone")


def _low_adj_hog(group: ScratchGroup, path: str) -> Staged:
    proc = group.spawn([sys.executable, "-m", WORKLOAD_MODULE, "thrash", path])
    _read_ready(proc)
    return Staged(culprits=[proc.pid])


def _small_bystanders(group: ScratchGroup) -> dict[str, int]:
    return {
        "hog35-a": spawn_plain(group, "hog", "35"),
        "hog35-b": spawn_plain(group, "hog", "35"),
        "sleep": spawn_plain(group, "sleep"),
    }


def _idle_giant(group: ScratchGroup) -> dict[str, int]:
    return {"idle110": spawn_plain(group, "hog", "110"), "sleep": spawn_plain(group, "sleep")}


def _idle_hog_and_a_reader(group: ScratchGroup) -> dict[str, int]:
    """The bystanders (must live), then the culprit, already reading when the daemon starts."""
    bystanders = {"idle60": spawn_plain(group, "hog", "60"), "sleep": spawn_plain(group, "sleep")}
    spawn(group, "reader", "256")
    return bystanders


def _high_adj_bystander(group: ScratchGroup) -> dict[str, int]:
    # A process may always raise its own oom_score_adj; the hog keeps the default 0, lower
    # than the bystander's 900 (lowering below one's own needs CAP_SYS_RESOURCE).
    return {
        "adj900": spawn_plain(group, "--oom-score-adj", "900", "hog", "20"),
        "sleep": spawn_plain(group, "sleep"),
    }


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "impostor",
        "a thrasher calling itself sshd (comm and cmdline) beside 2 x 35 MiB and a sleep",
        160,
        _small_bystanders,
        _impostor,
    ),
    Scenario(
        "idle-vs-grower",
        "a 110 MiB idle process beside a smaller process that grows and thrashes",
        192,
        _idle_giant,
        _grower,
    ),
    Scenario(
        "forking-hog",
        "a parent with 8 thrashing children, beside 2 x 35 MiB and a sleep",
        192,
        _small_bystanders,
        _forker,
    ),
    Scenario(
        "churner",
        "a loop that forks a child thrashing for 0.5 s, waits, forks the next, beside 2 x 35 "
        "MiB and a sleep (the loop itself faults nothing)",
        160,
        _small_bystanders,
        _churner,
    ),
    Scenario(
        "orphaning-churner",
        "a shell loop starting, every 0.3 s, a thrasher that orphans itself (reparented away "
        "from the loop, same process group), beside 2 x 35 MiB and a sleep",
        160,
        _small_bystanders,
        _orphaning_churner,
    ),
    Scenario(
        "forking-hog-own-group",
        "the forking hog in its own child cgroup 'batch'",
        192,
        _small_bystanders,
        _forker_in_own_group,
    ),
    Scenario(
        "ssh.service-lookalike",
        "a thrasher in a child cgroup named ssh.service (not /system.slice/ssh.service)",
        160,
        _small_bystanders,
        _hog_in_ssh_service,
    ),
    Scenario(
        "low-adj-hog",
        "a thrasher at oom_score_adj 0 beside a 20 MiB bystander at 900",
        96,
        _high_adj_bystander,
        _low_adj_hog,
    ),
    Scenario(
        "read-thrasher",
        "a small process thrashing the page cache with read(2) since before the daemon "
        "started, beside a 60 MiB idle one (no page faults: seen by the read probe)",
        128,
        _idle_hog_and_a_reader,
        _running_reader,
    ),
)


def by_name(name: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(name)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as dead: its memory is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


@contextlib.contextmanager
def staged_group(scenario: Scenario) -> Iterator[tuple[ScratchGroup, dict[str, int]]]:
    """The scenario's scratch group with its bystanders running (removed on exit)."""
    with ScratchGroup(scenario.limit_mib << 20) as group:
        bystanders = scenario.bystanders(group)
        try:
            yield group, bystanders
        finally:
            # Forked grandchildren are not in group.processes: cgroup.kill (close) takes them.
            with contextlib.suppress(OSError):
                group.group.kill()
            for proc in group.processes:
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    main()
