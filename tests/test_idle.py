"""What an idle ``pressured run`` holds in memory: every module of the kill path, and nothing
for an operations feature that is switched off.

Each test runs the real daemon through a small launcher that adds one thread: when the test
writes to a FIFO, that thread writes the daemon's ``sys.modules`` to a file. The daemon says
``READY=1`` on ``NOTIFY_SOCKET`` once its operations pieces are started (the last step of
start-up), so a dump taken after it is what the daemon holds while idle.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.idle import rss_by_mapping
from pressured.testing.daemon import Daemon, write_config
from pressured.testing.scratch import ScratchGroup

LAUNCHER = """\
import os, runpy, sys, threading

def dump_modules_on_request():
    fifo, out = os.environ["IDLE_TEST_FIFO"], os.environ["IDLE_TEST_OUT"]
    count = 0
    while True:
        with open(fifo, encoding="ascii") as request:
            request.read()
        count += 1
        names = "\\n".join(sorted(sys.modules))
        with open(f"{out}.tmp", "w", encoding="ascii") as handle:
            handle.write(names)
        os.rename(f"{out}.tmp", f"{out}.{count}")

threading.Thread(target=dump_modules_on_request, name="test-dump", daemon=True).start()
sys.argv = ["pressured", *sys.argv[1:]]
runpy.run_module("pressured", run_name="__main__")
"""

# Operations modules for features that are off in these tests (metrics, journal, hooks).
OFF_FEATURE_MODULES = {
    "prometheus_client",
    "pressured.ops.metrics",
    "pressured.ops.http",
    "pressured.ops.journal",
    "pressured.ops.hooks",
    "aiofiles",
}


class ModuleProbe:
    """The daemon started through :data:`LAUNCHER`, with a notify socket for its READY=1."""

    def __init__(self, tmp_path: Path, config: Path, *extra: str) -> None:
        self.fifo = tmp_path / "dump.fifo"
        os.mkfifo(self.fifo)
        self.out = tmp_path / "modules"
        self.notify_path = tmp_path / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        env = {
            "IDLE_TEST_FIFO": str(self.fifo),
            "IDLE_TEST_OUT": str(self.out),
            "NOTIFY_SOCKET": str(self.notify_path),
        }
        self.daemon = Daemon(config, *extra, env=env)
        self.daemon.argv[1:3] = ["-c", LAUNCHER]  # instead of "-m pressured"
        self.dumps = 0

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until READY=1: armed, and the operations pieces started."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            self.notify.settimeout(remaining)
            if b"READY=1" in self.notify.recv(4096):
                return
        raise TimeoutError(f"no READY=1 within {timeout_s} s; log: {self.daemon.raw[-10:]}")

    def modules(self, timeout_s: float = 10.0) -> set[str]:
        """The daemon's ``sys.modules`` now."""
        self.dumps += 1
        deadline = time.monotonic() + timeout_s
        # Non-blocking, so a daemon that died (no reader on the FIFO) fails the test instead of
        # hanging it; ENXIO until the dump thread is back in open().
        while True:
            try:
                request = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        try:
            os.write(request, b"dump")
        finally:
            os.close(request)
        path = Path(f"{self.out}.{self.dumps}")
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon wrote no module list within {timeout_s} s")
            time.sleep(0.05)
        return set(path.read_text(encoding="ascii").split())

    def close(self) -> None:
        self.notify.close()


def _defaults_in(scratch: ScratchGroup, path: Path, extra: str = "") -> Path:
    """The built-in defaults (levels, policy chain, mlockall), watching only ``scratch``,
    with metrics off as in benchmarks/idle.py."""
    memcg = f'memcg_v1 = "{scratch.memcg_path}"\n' if scratch.memcg_path else ""
    scope = f'[[scopes]]\ncgroup = "{scratch.path}"\n{memcg}'
    return write_config(path, f"[metrics]\nenabled = false\n{extra}\n{scope}")


LOOPS = pytest.mark.parametrize("loop", ["uvloop", "asyncio"])


@pytest.mark.kernel
@LOOPS
def test_idle_daemon_with_metrics_off_holds_no_prometheus_client(
    scratch: ScratchGroup, tmp_path: Path, loop: str
) -> None:
    """With metrics off nothing can read them: prometheus-client (and the HTTP, WSGI and
    e-mail modules it imports) cost 2.4 MiB of locked memory for the daemon's whole life."""
    config = _defaults_in(scratch, tmp_path / "p.toml")
    probe = ModuleProbe(tmp_path, config, "--dry-run", "--loop", loop)
    try:
        with probe.daemon as daemon:
            probe.wait_ready()
            loaded = probe.modules()
            assert daemon.stop() == 0
    finally:
        probe.close()
    assert {"pressured.controller", "pressured.actuator", "pressured.reaper"} <= loaded
    assert not (OFF_FEATURE_MODULES & loaded), sorted(OFF_FEATURE_MODULES & loaded)


@pytest.mark.kernel
@pytest.mark.pressure
@LOOPS
def test_a_real_kill_imports_no_module(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path, loop: str
) -> None:
    """Everything from the trigger to the reaped victim is imported before arming: under real
    pressure a lazy import is a disk read that can take seconds. The daemon on its default
    chain kills a real thrasher; its module set is the same after the kill as when idle."""
    config = _defaults_in(scratch, tmp_path / "p.toml", "[guard]\ncooldown_ms = 500\n")
    probe = ModuleProbe(tmp_path, config, "--loop", loop)
    try:
        with probe.daemon as daemon:
            probe.wait_ready()
            idle = probe.modules()
            thrasher = scratch.spawn_workload("thrash", thrash_file)
            killed = daemon.wait_for("victim.killed", 60)
            assert killed["pid"] == thrasher.pid
            thrasher.wait(20)
            after_kill = probe.modules()
            assert daemon.stop() == 0
    finally:
        probe.close()  # the scratch group kills what is left of the thrasher
    assert after_kill - idle == set()


def test_rss_breakdown_accounts_for_every_resident_page() -> None:
    """The idle benchmark's per-mapping split of RSS adds up to the kernel's own total (no
    mapping dropped or counted twice), and finds this interpreter's heap and shared objects."""

    def rollup_rss_kib() -> int:
        with open("/proc/self/smaps_rollup", encoding="ascii") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("Rss:"))

    before = rollup_rss_kib()
    split = rss_by_mapping(os.getpid())
    after = rollup_rss_kib()
    # The two readings bracket the split; reading smaps itself may touch a few pages.
    assert min(before, after) - 256 <= sum(split.values()) <= max(before, after) + 256
    assert split["malloc heap ([heap])"] > 0
    assert split["other shared objects and files"] > 0


# Run in a child so the test process itself is never locked. Prints JSON figures (KiB).
LOCKED_CHILD = """\
import ctypes, json, mmap, sys
MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MADV_DONTNEED = 1, 2, 4, 4
libc = ctypes.CDLL(None, use_errno=True)
def status():
    with open("/proc/self/status") as handle:
        rows = (line.split() for line in handle)
        return {row[0].rstrip(":"): int(row[1]) for row in rows if row[0] in ("VmRSS:", "VmLck:")}
if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
    print(json.dumps({"refused": ctypes.get_errno()}))
    sys.exit(0)
size = 64 << 20
base = status()
region = mmap.mmap(-1, size)
mapped = status()
region[: 8 << 20] = b"x" * (8 << 20)
touched = status()
address = ctypes.addressof(ctypes.c_char.from_buffer(region))
result = libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(size), MADV_DONTNEED)
errno = ctypes.get_errno() if result != 0 else 0
print(json.dumps({"base": base, "mapped": mapped, "touched": touched,
                  "madvise": result, "errno": errno, "after_madvise": status()}))
"""


@pytest.mark.kernel
def test_onfault_lock_counts_mappings_but_keeps_only_touched_pages_and_refuses_dontneed() -> None:
    """Kernel facts behind the idle figures: under mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT)
    a new 64 MiB mapping adds 64 MiB to VmLck but nothing to VmRSS until touched (so the idle
    table's "locked" column is address space, not memory); and madvise(MADV_DONTNEED) on
    locked pages fails with EINVAL, which is why the daemon's malloc_trim must come before
    mlockall: after it, freed heap pages can no longer be handed back."""
    done = subprocess.run(
        [sys.executable, "-c", LOCKED_CHILD],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    figures = json.loads(done.stdout)
    if "refused" in figures:
        pytest.skip(f"mlockall refused here (errno {figures['refused']}): no CAP_IPC_LOCK")
    base, mapped, touched = figures["base"], figures["mapped"], figures["touched"]
    assert mapped["VmLck"] - base["VmLck"] >= 64 << 10
    assert mapped["VmRSS"] - base["VmRSS"] < 4 << 10
    assert touched["VmRSS"] - mapped["VmRSS"] >= 8 << 10
    assert (figures["madvise"], figures["errno"]) == (-1, errno.EINVAL)
    assert figures["after_madvise"]["VmRSS"] >= touched["VmRSS"] - (1 << 10)
