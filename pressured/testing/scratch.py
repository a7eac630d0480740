"""Throw-away cgroups with a memory limit and real workloads inside: how tests and benchmarks
make real memory pressure (needs root and cgroup2).

``ScratchGroup`` creates a cgroup v2 group (pressure files, ``cgroup.kill``) and, where memory
is a v1 controller (hybrid hosts), a v1 memcg under this process's own memcg with the limit.
Everything it creates is removed on exit, processes first, even when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

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

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> ScratchGroup:
        reason = scratch_unavailable_reason(self.layout)
        if reason:
            raise RuntimeError(f"cannot create a scratch cgroup: {reason}")
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
        """Kill what runs inside, wait for it, remove the groups. Safe to call twice."""
        with contextlib.suppress(OSError):
            if self.group.exists():
                self.group.kill()
        for proc in self.processes:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._wait_empty()
        self._rmdir_tree(self.group.directory)
        if self.memcg_dir is not None:
            self._rmdir_tree(self.memcg_dir)

    def _wait_empty(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if not self.group.all_members():
                    return
            except OSError:
                return
            time.sleep(0.02)

    @staticmethod
    def _rmdir_tree(directory: Path) -> None:
        if not directory.exists():
            return
        for dirpath, _dirnames, _files in sorted(
            os.walk(directory), key=lambda item: -len(item[0])
        ):
            for _attempt in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)

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
