"""Throw-away cgroups with a memory limit and real workloads inside: how tests and benchmarks
make real memory pressure (needs root and cgroup2).

``ScratchGroup`` creates a cgroup v2 group (pressure files, ``cgroup.kill``) and, where memory
is a v1 controller (hybrid hosts), a v1 memcg under this process's own memcg with the limit.
Everything it creates is removed on exit, processes first, even when the test failed; what
cannot be removed (a process that survives SIGKILL, a group that stays busy) is named in a
:class:`ScratchGroupLeak` raised once all the rest is cleaned up, never left behind silently.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType

from pressured.errors import PressuredError
from pressured.kernel import cgroupfs
from pressured.kernel.cgroupfs import Cgroup, CgroupLayout, LayoutMode

WORKLOAD_MODULE = "pressured.testing.workloads"

FORK_SLEEPERS = """
import os, signal, sys
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        while True:
            signal.pause()
sys.stdout.write("ready\\n")
sys.stdout.flush()
while True:
    signal.pause()
"""
"""``python -c FORK_SLEEPERS N``: a parent that forks N sleeping children (cheap: no exec, pages
shared), prints ``ready`` and sleeps too; for many-member group victims."""


SETTLE_S = 10.0
"""How long :meth:`ScratchGroup.close` waits with no member dying before it gives up on the
rest. A deadline that moves with progress: 10,000 killed processes take seconds to exit here,
which a fixed 10 s deadline counted as a failure to wait for (and then left them)."""
CLOSE_LIMIT_S = 300.0
"""The most :meth:`ScratchGroup.close` waits in all, progress or not."""
SHOWN_PIDS = 20


class ScratchGroupLeak(RuntimeError):
    """A scratch group that :meth:`ScratchGroup.close` could not clean up completely: the
    message names the group, the processes still alive and the directories left."""


class _UnwindOnSigterm:
    """While a scratch group is open, SIGTERM left at its default action raises as Ctrl-C does.

    The default action ends the process on the spot, so no ``with`` block unwinds and no
    close() runs: a test run or lab script stopped by ``timeout``, a cancelled CI job or a
    plain ``kill`` left its groups behind with everything in them alive. Raised as a
    KeyboardInterrupt, it unwinds everything and stops pytest's session, as Ctrl-C would.
    Only the main thread can set handlers, and a handler someone else set is left alone."""

    def __init__(self) -> None:
        self._open = 0
        self._installed = False

    @staticmethod
    def _interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    def hold(self) -> None:
        self._open += 1
        if self._open > 1 or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._interrupt)
            self._installed = True

    def release(self) -> None:
        self._open -= 1
        if self._open or not self._installed:
            return
        self._installed = False
        if signal.getsignal(signal.SIGTERM) == self._interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


_unwind_on_sigterm = _UnwindOnSigterm()


def scratch_unavailable_reason(layout: CgroupLayout | None = None) -> str | None:
    """Why a ScratchGroup cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    if not os.path.exists("/proc/pressure/memory"):
        return "kernel has no PSI (/proc/pressure/memory missing; boot with psi=1)"
    layout = layout or cgroupfs.discover_layout()
    if layout.unified is None:
        return "no cgroup2 hierarchy mounted"
    if layout.mode is LayoutMode.V2:
        root = Path(layout.unified.mount_point)
        if "memory" not in (root / "cgroup.subtree_control").read_text().split():
            return "cgroup2 memory controller not enabled for child groups"
    return None


class ScratchGroup:
    """A cgroup v2 group (plus a v1 memcg on hybrid hosts) with ``limit_bytes`` of memory."""

    def __init__(
        self,
        limit_bytes: int | None = 64 * 2**20,
        *,
        name: str | None = None,
        layout: CgroupLayout | None = None,
        parent: str | None = None,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.layout = layout or cgroupfs.discover_layout()
        self.name = name or f"pressured-test-{uuid.uuid4().hex[:10]}"
        base = (parent or "").rstrip("/")
        self.path = f"{base}/{self.name}"
        self.limit_bytes = limit_bytes
        self.group = Cgroup(self.layout, self.path)
        self.memcg_dir: Path | None = None
        self.memcg_path: str | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        self.settle_s = settle_s
        self._holding_sigterm = False

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> ScratchGroup:
        reason = scratch_unavailable_reason(self.layout)
        if reason:
            raise RuntimeError(f"cannot create a scratch cgroup: {reason}")
        _unwind_on_sigterm.hold()
        self._holding_sigterm = True
        self.group.create()
        try:
            self._make_memcg()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _make_memcg(self) -> None:
        if self.layout.mode is LayoutMode.HYBRID:
            own = cgroupfs.own_memcg_v1() or "/"
            self.memcg_path = f"{own.rstrip('/')}/{self.name}"
            self.memcg_dir = self.layout.v1_dir("memory", self.memcg_path)
            self.memcg_dir.mkdir(exist_ok=True)
            self.group = Cgroup(self.layout, self.path, self.memcg_path)
            if self.limit_bytes is not None:
                (self.memcg_dir / "memory.limit_in_bytes").write_text(str(self.limit_bytes))
        elif self.limit_bytes is not None:
            (self.group.directory / "memory.max").write_text(str(self.limit_bytes))

    def set_limit(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        if self.memcg_dir is not None:
            (self.memcg_dir / "memory.limit_in_bytes").write_text(str(limit_bytes))
        else:
            (self.group.directory / "memory.max").write_text(str(limit_bytes))

    def close(self) -> None:
        """Kill what runs inside, wait until it is gone, remove the groups. Safe to call twice.

        Does all the cleanup it can, then raises :class:`ScratchGroupLeak` if processes are
        still alive or a directory could not be removed: a leaked group (once, two 10,000-
        process groups, alive) must fail the test or benchmark that made it, loudly.
        """
        self._kill_everything()
        alive = self._wait_empty()
        self._reap_spawned()
        left = self._rmdir_tree(self.group.directory, retry=not alive)
        if self.memcg_dir is not None:
            left += self._rmdir_tree(self.memcg_dir, retry=not alive)
        if self._holding_sigterm:
            self._holding_sigterm = False
            _unwind_on_sigterm.release()
        if alive or left:
            raise ScratchGroupLeak(self._describe_leak(alive, left))

    def _kill_everything(self) -> None:
        """SIGKILL the whole v2 tree at once (cgroup.kill), then, one by one, whatever
        cgroup.kill cannot reach: processes in the v1 memcg that left the v2 group, and the
        processes spawned here wherever they went."""
        stragglers = self._memcg_members()
        if self.group.exists():
            try:
                self.group.kill()
            except (OSError, PressuredError):
                # No cgroup.kill (before Linux 5.14) or it failed: one by one, then.
                with contextlib.suppress(FileNotFoundError):
                    stragglers += self.group.member_paths(errors=[])
        for pid in stragglers:
            _kill_pid(pid)
        for proc in self.processes:
            with contextlib.suppress(OSError):
                proc.kill()

    def _live_members(self) -> list[int]:
        """Every PID still in the v2 tree or the v1 memcg tree (dying ones included)."""
        pids: set[int] = set(self._memcg_members())
        # A threaded child's cgroup.procs is unreadable (EOPNOTSUPP); its threaded domain
        # lists those processes, so the walk records the error and goes on.
        with contextlib.suppress(FileNotFoundError):
            pids.update(self.group.member_paths(errors=[]))
        return sorted(pids)

    def _memcg_members(self) -> list[int]:
        if self.memcg_dir is None or not self.memcg_dir.is_dir():
            return []
        pids: list[int] = []
        for dirpath, _dirnames, _files in os.walk(self.memcg_dir):
            with contextlib.suppress(FileNotFoundError):
                pids.extend(map(int, (Path(dirpath) / "cgroup.procs").read_text().split()))
        return pids

    def _wait_empty(self) -> list[int]:
        """Wait until no process is left in the groups; return the ones still there once
        none has gone for ``settle_s`` (or after ``CLOSE_LIMIT_S`` in all)."""
        start = last_progress = time.monotonic()
        fewest: int | None = None
        while True:
            alive = self._live_members()
            now = time.monotonic()
            if not alive:
                return []
            if fewest is None or len(alive) < fewest:
                fewest, last_progress = len(alive), now
            if now - last_progress >= self.settle_s or now - start >= CLOSE_LIMIT_S:
                return alive
            time.sleep(0.02)

    def _reap_spawned(self) -> None:
        """Collect the exit status of what was spawned here (no zombie outlives the group);
        one that still runs was named by _wait_empty already, if it was in the group."""
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)

    @staticmethod
    def _rmdir_tree(directory: Path, *, retry: bool) -> list[str]:
        """Remove ``directory`` and its subgroups, deepest first; the ones that could not be
        removed, each with the reason. An emptied group may stay busy for a moment (EBUSY)
        while its last processes finish exiting: retried for a second when ``retry``."""
        if not directory.exists():
            return []
        left: list[str] = []
        walk = sorted(os.walk(directory), key=lambda item: -len(item[0]))
        for dirpath, _dirnames, _files in walk:
            attempts = 50 if retry else 1
            for attempt in range(attempts):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if attempt + 1 == attempts:
                        left.append(f"{dirpath} ({errno.errorcode.get(exc.errno or 0, '?')})")
                    else:
                        time.sleep(0.02)
        return left

    def _describe_leak(self, alive: list[int], left: list[str]) -> str:
        parts = [f"scratch cgroup {self.path} was not cleaned up"]
        if alive:
            shown = ", ".join(map(str, alive[:SHOWN_PIDS]))
            more = f" and {len(alive) - SHOWN_PIDS} more" if len(alive) > SHOWN_PIDS else ""
            parts.append(
                f"{len(alive)} process(es) still alive {self.settle_s:g} s after SIGKILL "
                f"with none exiting: {shown}{more}"
            )
        if left:
            parts.append(f"could not remove {', '.join(left)}")
        return "; ".join(parts)

    # -- membership ---------------------------------------------------------------------------
    def child(self, name: str, limit_bytes: int | None = None) -> Cgroup:
        """A subgroup (v2, and v1 memcg on hybrid hosts) for cgroup-victim tests."""
        path = f"{self.path}/{name}"
        v1_path = None
        if self.memcg_dir is not None and self.memcg_path is not None:
            v1_path = f"{self.memcg_path}/{name}"
            v1_dir = self.layout.v1_dir("memory", v1_path)
            v1_dir.mkdir(exist_ok=True)
            if limit_bytes is not None:
                (v1_dir / "memory.limit_in_bytes").write_text(str(limit_bytes))
        group = Cgroup(self.layout, path, v1_path).create()
        return group

    def _procs_files(self, group: Cgroup) -> list[str]:
        files = [str(group.directory / "cgroup.procs")]
        if self.memcg_dir is not None:
            v1_rel = group.memcg_v1_path or self.memcg_path or "/"
            files.append(str(self.layout.v1_dir("memory", v1_rel) / "cgroup.procs"))
        return files

    def spawn(
        self,
        argv: Sequence[str],
        *,
        group: Cgroup | None = None,
        stdout: int | None = subprocess.PIPE,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the group (it joins before exec, so all its memory counts)."""
        joins = "; ".join(
            f"echo $$ > {shlex.quote(f)}" for f in self._procs_files(group or self.group)
        )
        wrapper = ["/bin/sh", "-c", f'{joins}; exec "$@"', "sh", *argv]
        proc = subprocess.Popen(wrapper, stdout=stdout, stderr=subprocess.DEVNULL, env=env)
        self.processes.append(proc)
        return proc

    def spawn_workload(
        self,
        *args: str,
        group: Cgroup | None = None,
        wait_ready: bool = True,
        timeout_s: float = 60.0,
    ) -> subprocess.Popen[bytes]:
        """Start ``python -m pressured.testing.workloads ARGS`` inside the group; by default
        wait for its ``ready`` line (memory touched)."""
        proc = self.spawn([sys.executable, "-m", WORKLOAD_MODULE, *args], group=group)
        if wait_ready:
            wait_for_ready(proc, timeout_s)
        return proc

    def usage_bytes(self) -> int:
        return self.group.memory().current_bytes


def _kill_pid(pid: int) -> None:
    """SIGKILL ``pid`` through a pidfd (a PID read from cgroup.procs may exit and be reused
    before the signal; the pidfd pins the process read), never this process itself."""
    if pid in (0, 1, os.getpid()):
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)


def wait_for_ready(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Block until the workload prints ``ready`` (or fail if it exits or takes too long)."""
    read_until(proc, b"ready", timeout_s)


def read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout_s: float = 60.0) -> bytes:
    """What the workload printed up to and including ``marker`` (and what came with it); fail
    if it exits or takes longer than ``timeout_s``."""
    if proc.stdout is None:
        raise ValueError("reading a workload's output needs it started with stdout=PIPE")
    deadline = time.monotonic() + timeout_s
    buffer = b""
    while marker not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"workload {proc.pid} not ready within {timeout_s} s")
        readable, _, _ = select.select([proc.stdout], [], [], remaining)
        if readable:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"workload {proc.pid} exited before ready ({proc.poll()})")
            buffer += chunk
    return buffer


def make_thrash_file(path: str | os.PathLike[str], size_bytes: int) -> Path:
    """A file of ``size_bytes`` to thrash the page cache with (reused when already that size)."""
    target = Path(path)
    if not (target.exists() and target.stat().st_size == size_bytes):
        block = os.urandom(1 << 20)
        with open(target, "wb") as handle:
            for _ in range(size_bytes >> 20):
                handle.write(block)
            # Dirty pages cannot be dropped: left in the cache (charged to *our* group) the
            # workload would find them resident and never fault, so no pressure would come.
            handle.flush()
            os.fsync(handle.fileno())
    evict_from_cache(target)
    return target


def evict_from_cache(path: str | os.PathLike[str]) -> None:
    """Drop a file's pages from the page cache so the next reader faults them in again."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def drop_caches() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3")
