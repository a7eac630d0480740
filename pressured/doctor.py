"""What this host supports and what pressured will do here: the checks behind ``pressured doctor``.

Every check *does* the thing it reports on instead of guessing from version numbers: it arms a
PSI trigger, opens a pidfd, kills and reaps a throw-away child with ``process_mrelease``, tries
``mlockall`` in a short-lived child. Each returns a frozen :class:`CheckResult`; rendering is the
CLI's job (:mod:`pressured.cli.doctor`). The whole run takes a few hundred milliseconds: the two
child processes are started first and collected last so their start-up overlaps the rest.

Nothing here touches any process but the children it starts itself, and every file descriptor,
child and probe cgroup it creates is closed, reaped or removed before the function returns.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import json
import os
import platform
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pressured.errors import KernelError, ParseError, TriggerError
from pressured.kernel import caps, cgroupfs, pidfd, procfs, psi
from pressured.kernel.cgroupfs import CgroupLayout, LayoutMode

PROBE_TIMEOUT_S = 3.0
"""Longest a probe child may take to get ready or to report; far above the ~60 ms it needs."""

MRELEASE_PROBE_MIB = 8
"""Memory the throw-away mrelease child holds: enough that there is something to release."""

MIN_KERNEL_FOR_MRELEASE = (5, 15)
MIN_KERNEL_FOR_CGROUP_KILL = (5, 14)

# The probes run as `python -I -S -c`: isolated (no user site, no PYTHON* variables) and without
# site imports, so they start in ~50 ms and cannot pick up anything from the environment.
_MRELEASE_CHILD = f"""
import os, time
block = bytearray({MRELEASE_PROBE_MIB} << 20)
for offset in range(0, len(block), 4096):
    block[offset] = 1
os.write(1, b"ready\\n")
time.sleep(60)
"""

_MLOCK_CHILD = """
import ctypes, json
libc = ctypes.CDLL(None, use_errno=True)
result = {}
for flags in (7, 3):  # MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT, then without ONFAULT
    ok = libc.mlockall(flags) == 0
    result[str(flags)] = 0 if ok else ctypes.get_errno()
    if ok:
        break
print(json.dumps(result))
"""

_MCL_ALL = 7
_MCL_NO_ONFAULT = 3
_MCL_LABELS = {
    _MCL_ALL: "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT",
    _MCL_NO_ONFAULT: "MCL_CURRENT|MCL_FUTURE",
}


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    """pressured runs, with less than the best this feature could give."""
    FAIL = "fail"
    """An essential feature is missing: pressured cannot do its job here."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One fact about this host, as found by trying it.

    ``remedy`` is one sentence saying what to change; every result that is not ``ok`` has one.
    ``essential`` checks decide :attr:`DoctorReport.can_run`. ``facts`` are the raw figures
    behind ``detail``, for ``--json``.
    """

    name: str
    status: Status
    detail: str
    remedy: str | None = None
    essential: bool = False
    facts: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status is not Status.OK and not self.remedy:
            raise ValueError(f"check {self.name!r} is {self.status} but has no remedy")

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": str(self.status),
            "essential": self.essential,
            "detail": self.detail,
            "remedy": self.remedy,
            "facts": dict(self.facts),
        }


# -- kernel version ----------------------------------------------------------------------------


def kernel_version(release: str | None = None) -> tuple[int, int] | None:
    """``(major, minor)`` out of ``uname -r`` (``6.18.44-fc`` -> ``(6, 18)``), None if odd."""
    match = re.match(r"(\d+)\.(\d+)", release if release is not None else platform.release())
    return (int(match[1]), int(match[2])) if match else None


def check_kernel(release: str | None = None) -> CheckResult:
    """The version only explains the other results; each feature is still tried for real."""
    release = release if release is not None else platform.release()
    version = kernel_version(release)
    facts = {"release": release}
    if version is None:
        return CheckResult(
            "kernel",
            Status.WARN,
            f"Linux {release}: version not recognised",
            "Rely on the individual checks below, which try each feature for real.",
            facts=facts,
        )
    if version < MIN_KERNEL_FOR_MRELEASE:
        return CheckResult(
            "kernel",
            Status.WARN,
            f"Linux {release}: older than 5.15, so no process_mrelease"
            + ("" if version >= MIN_KERNEL_FOR_CGROUP_KILL else " and no cgroup.kill"),
            "Use Linux 5.15 or later so killed processes' memory is freed at once.",
            facts=facts,
        )
    return CheckResult(
        "kernel",
        Status.OK,
        f"Linux {release} (5.15+: PSI triggers, pidfd, cgroup.kill, process_mrelease)",
        facts=facts,
    )


# -- PSI ---------------------------------------------------------------------------------------


def _pressure_summary(pressure: psi.Pressure) -> str:
    text = f"some avg10={pressure.some.avg10:.2f}"
    if pressure.full is not None:
        text += f", full avg10={pressure.full.avg10:.2f}"
    return text


def check_psi_system(proc_root: str = "/proc") -> CheckResult:
    """System-wide PSI is what the default scope watches: without it pressured is blind."""
    path = psi.system_pressure_path("memory", proc_root)
    try:
        pressure = psi.read_pressure(path)
    except FileNotFoundError:
        return CheckResult(
            "psi_system",
            Status.FAIL,
            f"{path} does not exist: kernel built without CONFIG_PSI",
            "Use a kernel with CONFIG_PSI=y (every major distribution has it).",
            essential=True,
            facts={"path": str(path)},
        )
    except OSError as exc:
        hint = " (PSI disabled at boot)" if exc.errno == errno_mod.EOPNOTSUPP else ""
        return CheckResult(
            "psi_system",
            Status.FAIL,
            f"cannot read {path}: {exc.strerror}{hint}",
            "Boot with psi=1 on the kernel command line.",
            essential=True,
            facts={"path": str(path), "errno": exc.errno},
        )
    except ParseError as exc:
        return CheckResult(
            "psi_system",
            Status.FAIL,
            f"unexpected contents: {exc.problem}",
            "Report this kernel's /proc/pressure/memory format to the pressured authors.",
            essential=True,
            facts={"path": str(path)},
        )
    return CheckResult(
        "psi_system",
        Status.OK,
        f"{path} readable ({_pressure_summary(pressure)})",
        essential=True,
        facts={"path": str(path), "some_avg10": pressure.some.avg10},
    )


def _layout_or_none(proc_root: str) -> CgroupLayout | None:
    try:
        return cgroupfs.discover_layout(proc_root)
    except (OSError, ParseError):
        return None


def check_psi_cgroup(layout: CgroupLayout | None, proc_root: str = "/proc") -> CheckResult:
    """Per-group PSI (cgroup v2 only) is what scopes on a group, and library users, watch."""
    remedy = "Mount cgroup2 (systemd.unified_cgroup_hierarchy=1 or hybrid) for per-group PSI."
    if layout is None or layout.unified is None:
        return CheckResult(
            "psi_cgroup",
            Status.WARN,
            "no cgroup2 hierarchy mounted: only system-wide pressure can be watched",
            remedy,
        )
    try:
        group = cgroupfs.own_cgroup("self", proc_root) or "/"
        path = layout.v2_dir(group) / "memory.pressure"
        pressure = psi.read_pressure(path)
    except (OSError, ParseError, KernelError) as exc:
        return CheckResult(
            "psi_cgroup",
            Status.WARN,
            f"our cgroup's memory.pressure is not readable: {exc}",
            "Check that the cgroup2 mount is visible here (containers: mount /sys/fs/cgroup).",
        )
    return CheckResult(
        "psi_cgroup",
        Status.OK,
        f"{path} readable ({_pressure_summary(pressure)})",
        facts={"cgroup": group, "path": str(path)},
    )


@dataclass(frozen=True, slots=True)
class TriggerWindows:
    """The trigger windows this process may use, found by arming triggers.

    Unprivileged (no CAP_SYS_RESOURCE): multiples of 2 s up to 10 s, checked on the 2 s
    averaging tick. Privileged: any window from 500 ms to 10 s, checked by a real-time poller
    about every window/10.
    """

    privileged: bool
    min_window_us: int
    max_window_us: int
    step_us: int
    """Windows must be a multiple of this (1 = any value in range)."""
    checked_every: str
    has_cap_sys_resource: bool
    probes: Mapping[str, str] = field(default_factory=dict)
    """What the kernel answered per tried spec: ``"ok"`` or the errno name."""

    def describe(self) -> str:
        if self.privileged:
            return (
                f"privileged: any window from {self.min_window_us / 1e6:g} s to "
                f"{self.max_window_us / 1e6:g} s, {self.checked_every}"
            )
        return (
            f"unprivileged: 2 s multiples ({self.min_window_us / 1e6:g}-"
            f"{self.max_window_us / 1e6:g} s), {self.checked_every}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "privileged": self.privileged,
            "min_window_us": self.min_window_us,
            "max_window_us": self.max_window_us,
            "step_us": self.step_us,
            "checked_every": self.checked_every,
            "has_cap_sys_resource": self.has_cap_sys_resource,
            "probes": dict(self.probes),
            "summary": self.describe(),
        }


@dataclass(frozen=True, slots=True)
class TriggerProbe:
    """What happened when we armed triggers: the legal windows, or why none could be armed."""

    path: str
    windows: TriggerWindows | None
    error: str | None = None
    errno: int = 0


def _arm_and_close(path: str, spec: psi.TriggerSpec) -> None:
    fd = psi.open_trigger(path, spec)
    os.close(fd)


def _spec_text(spec: psi.TriggerSpec) -> str:
    """The spec as written to the kernel, without its NUL: ``some 150000 1000000``."""
    return spec.kernel_text().rstrip(b"\0").decode("ascii")


def _errno_name(number: int) -> str:
    return errno_mod.errorcode.get(number, str(number))


def probe_trigger_windows(proc_root: str = "/proc") -> TriggerProbe:
    """Arm a 1 s trigger, then (if refused with EINVAL) a 2 s one, on the system memory
    pressure file; close each at once. This is the only reliable answer: privilege is judged on
    the opener's credentials, and older kernels had other rules."""
    path = str(psi.system_pressure_path("memory", proc_root))
    fast = psi.TriggerSpec(psi.Resource.MEMORY, "some", 150_000, psi.US_PER_S)
    slow = psi.TriggerSpec(psi.Resource.MEMORY, "some", 150_000, 2 * psi.US_PER_S)
    has_cap = psi.may_use_fast_windows(proc_root)
    probes: dict[str, str] = {}
    try:
        _arm_and_close(path, fast)
        probes[_spec_text(fast)] = "ok"
        windows = TriggerWindows(
            privileged=True,
            min_window_us=psi.WINDOW_MIN_US,
            max_window_us=psi.WINDOW_MAX_US,
            step_us=1,
            checked_every="checked about every window/10 by a real-time poller",
            has_cap_sys_resource=has_cap,
            probes=probes,
        )
        return TriggerProbe(path, windows)
    except TriggerError as exc:
        probes[_spec_text(fast)] = _errno_name(exc.errno)
        if exc.errno != errno_mod.EINVAL:
            return TriggerProbe(path, None, str(exc), exc.errno)
    try:
        _arm_and_close(path, slow)
    except TriggerError as exc:
        probes[_spec_text(slow)] = _errno_name(exc.errno)
        return TriggerProbe(path, None, str(exc), exc.errno)
    probes[_spec_text(slow)] = "ok"
    windows = TriggerWindows(
        privileged=False,
        min_window_us=psi.UNPRIVILEGED_WINDOW_STEP_US,
        max_window_us=psi.WINDOW_MAX_US,
        step_us=psi.UNPRIVILEGED_WINDOW_STEP_US,
        checked_every="checked only on the 2 s averaging tick",
        has_cap_sys_resource=has_cap,
        probes=probes,
    )
    return TriggerProbe(path, windows)


def check_psi_triggers(probe: TriggerProbe) -> CheckResult:
    """Triggers are how pressured hears about pressure without polling: essential."""
    if probe.windows is None:
        remedy = "Run as root (or with write access to the pressure files) on Linux 5.2+."
        if probe.errno == errno_mod.EOPNOTSUPP:
            remedy = "Boot with psi=1 on the kernel command line."
        return CheckResult(
            "psi_triggers",
            Status.FAIL,
            f"no trigger could be armed on {probe.path}: {probe.error}",
            remedy,
            essential=True,
            facts={"path": probe.path, "errno": _errno_name(probe.errno)},
        )
    windows = probe.windows
    if windows.privileged:
        detail = f"a 1 s window was accepted on {probe.path}: {windows.describe()}"
    else:
        detail = (
            f"a 1 s window was refused (EINVAL) and a 2 s window accepted on {probe.path}: "
            f"{windows.describe()}"
        )
    return CheckResult("psi_triggers", Status.OK, detail, essential=True, facts=windows.as_dict())


def check_trigger_readers(probe: TriggerProbe) -> CheckResult:
    """Unprivileged triggers are starved by anyone who reads the same pressure file often
    (monitoring agents, ``watch cat``): each read pushes back the 2 s tick they are checked on.
    Nothing we can measure from here says whether such an agent exists, so say it plainly."""
    if probe.windows is None or probe.windows.privileged:
        return CheckResult(
            "trigger_readers",
            Status.OK,
            "privileged triggers use the kernel's real-time poller; readers of pressure files "
            "do not delay them",
        )
    return CheckResult(
        "trigger_readers",
        Status.WARN,
        "unprivileged triggers react in 2 s or more, and monitoring agents that read "
        "memory.pressure files often starve them (each read pushes back the 2 s check)",
        "Grant CAP_SYS_RESOURCE (sub-second windows, immune to readers) when fast reaction "
        "matters, and keep scrapers off the watched groups' pressure files.",
    )


# -- pidfd and process_mrelease ----------------------------------------------------------------


def check_pidfd() -> CheckResult:
    """Every kill goes through a pidfd (no PID-reuse race): essential."""
    try:
        fd = pidfd.open_pidfd(os.getpid())
    except (OSError, AttributeError) as exc:
        return CheckResult(
            "pidfd",
            Status.FAIL,
            f"pidfd_open failed: {exc}",
            "Use Linux 5.3 or later (pidfd_open, pidfd_send_signal).",
            essential=True,
        )
    try:
        # Signal 0 checks pidfd_send_signal and our right to signal without delivering anything.
        pidfd.send_signal(fd, 0)
    except OSError as exc:
        return CheckResult(
            "pidfd",
            Status.FAIL,
            f"pidfd_send_signal failed: {exc}",
            "Use Linux 5.1 or later and a seccomp profile that allows pidfd_send_signal.",
            essential=True,
        )
    finally:
        pidfd.close_quietly(fd)
    return CheckResult("pidfd", Status.OK, "pidfd_open and pidfd_send_signal work", essential=True)


def _start_child(code: str) -> subprocess.Popen[bytes] | None:
    """A probe child, or None when no Python interpreter can be started (reported, not raised)."""
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except (OSError, ValueError):
        return None


def _read_line(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """The child's first line, or b"" if it exits or times out first."""
    assert proc.stdout is not None  # noqa: S101 - started with stdout=PIPE just above
    deadline = time.monotonic() + timeout_s
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b""
        readable, _, _ = select.select([proc.stdout], [], [], remaining)
        if not readable:
            return b""
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\n", 1)[0]


def _finish_child(proc: subprocess.Popen[bytes]) -> None:
    """Kill (if still running) and reap our own child, whatever happened before."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=PROBE_TIMEOUT_S)
    if proc.stdout is not None:
        proc.stdout.close()


def start_mrelease_probe() -> subprocess.Popen[bytes] | None:
    """Start the throw-away child :func:`check_mrelease` kills (early, to overlap start-up)."""
    return _start_child(_MRELEASE_CHILD)


def check_mrelease(child: subprocess.Popen[bytes] | None = None) -> CheckResult:
    """Kill a throw-away child holding a few MiB through its pidfd and ``process_mrelease`` it,
    exactly as the reaper does. Missing mrelease is a warning: kills still work, but a starved
    victim then frees its memory at its own pace (seconds to minutes)."""
    remedy_kernel = "Use Linux 5.15 or later so killed processes' memory is freed at once."
    child = child or start_mrelease_probe()
    fd = -1
    try:
        if child is None or _read_line(child, PROBE_TIMEOUT_S) != b"ready":
            return CheckResult(
                "process_mrelease",
                Status.WARN,
                "the throw-away child did not start, so process_mrelease was not tried",
                f"Check that {sys.executable} can start; then run doctor again.",
            )
        fd = pidfd.open_pidfd(child.pid)
        pidfd.send_signal(fd, signal.SIGKILL)
        result = pidfd.process_mrelease(fd)
        exited = pidfd.wait_exited(fd, PROBE_TIMEOUT_S)
    except OSError as exc:
        return CheckResult(
            "process_mrelease",
            Status.WARN,
            f"could not kill the throw-away child through a pidfd: {exc}",
            "Fix the pidfd check first.",
        )
    finally:
        if fd >= 0:
            pidfd.close_quietly(fd)
        if child is not None:
            _finish_child(child)
    facts: dict[str, object] = {
        "result": str(result.status),
        "errno": _errno_name(result.errno) if result.errno else None,
        "duration_us": result.duration_ns // 1000,
        "child_mib": MRELEASE_PROBE_MIB,
        "child_exited": exited,
    }
    status = pidfd.MreleaseStatus
    if result.status is status.REAPED:
        detail = (
            f"killed a child holding {MRELEASE_PROBE_MIB} MiB via its pidfd and reaped its "
            f"memory in {result.duration_ns / 1e6:.2f} ms"
        )
        return CheckResult("process_mrelease", Status.OK, detail, facts=facts)
    if result.status is status.GONE:
        detail = (
            "killed a child via pidfd; process_mrelease answered ESRCH (gone: the child "
            "released its memory first), so the call exists and works"
        )
        return CheckResult("process_mrelease", Status.OK, detail, facts=facts)
    if result.status is status.UNSUPPORTED:
        return CheckResult(
            "process_mrelease",
            Status.WARN,
            "process_mrelease is not available (ENOSYS): kills work, memory returns at the "
            "victim's pace",
            remedy_kernel,
            facts=facts,
        )
    return CheckResult(
        "process_mrelease",
        Status.WARN,
        f"process_mrelease on a killed child answered {result.status} "
        f"({_errno_name(result.errno)}): kills work, reaping may not",
        "Check seccomp or LSM policy for syscall 448 (process_mrelease).",
        facts=facts,
    )


# -- cgroups -----------------------------------------------------------------------------------


def check_cgroup_layout(layout: CgroupLayout | None) -> CheckResult:
    """Where the hierarchies are decides where pressure, kill and memory figures come from."""
    if layout is None:
        return CheckResult(
            "cgroup_layout",
            Status.WARN,
            "/proc/self/mountinfo could not be read",
            "Make /proc visible to pressured.",
        )
    memory = layout.memory_v1
    facts: dict[str, object] = {
        "mode": str(layout.mode),
        "v2_mount": layout.unified.mount_point if layout.unified else None,
        "v2_root": layout.unified.root if layout.unified else None,
        "v1_memory_mount": memory.mount_point if memory else None,
        "v1_controllers": sorted(layout.v1),
    }
    if layout.mode is LayoutMode.V2 and layout.unified is not None:
        return CheckResult(
            "cgroup_layout",
            Status.OK,
            f"v2: cgroup2 at {layout.unified.mount_point}",
            facts=facts,
        )
    if layout.mode is LayoutMode.HYBRID and layout.unified is not None and memory is not None:
        detail = (
            f"hybrid: cgroup2 at {layout.unified.mount_point} (pressure, kill), "
            f"v1 memory at {memory.mount_point} (accounting)"
        )
        return CheckResult("cgroup_layout", Status.OK, detail, facts=facts)
    if layout.mode is LayoutMode.V1:
        return CheckResult(
            "cgroup_layout",
            Status.WARN,
            "v1 only: no per-group pressure and no cgroup.kill; system-wide watching only",
            "Mount cgroup2 (systemd.unified_cgroup_hierarchy=1) for per-group pressure and kill.",
            facts=facts,
        )
    return CheckResult(
        "cgroup_layout",
        Status.WARN,
        "no cgroup hierarchy is mounted: processes only, no groups",
        "Mount cgroup2 at /sys/fs/cgroup for per-group pressure, accounting and kill.",
        facts=facts,
    )


def check_cgroup_controllers(layout: CgroupLayout | None, proc_root: str = "/proc") -> CheckResult:
    """Memory accounting per group needs the memory controller, in v2 or (hybrid) in v1."""
    if layout is None or layout.unified is None:
        return CheckResult(
            "cgroup_controllers",
            Status.WARN,
            "no cgroup2 hierarchy, so no v2 controllers",
            "Mount cgroup2 for per-group memory accounting.",
        )
    try:
        group = cgroupfs.own_cgroup("self", proc_root) or "/"
        path = layout.v2_dir(group) / "cgroup.controllers"
        controllers = path.read_text(encoding="ascii").split()
    except (OSError, KernelError) as exc:
        return CheckResult(
            "cgroup_controllers",
            Status.WARN,
            f"cannot read our group's cgroup.controllers: {exc}",
            "Make the cgroup2 mount visible to pressured.",
        )
    facts: dict[str, object] = {"path": str(path), "v2_controllers": controllers}
    listed = " ".join(controllers) or "(none)"
    if "memory" in controllers:
        return CheckResult(
            "cgroup_controllers",
            Status.OK,
            f"v2 controllers: {listed}",
            facts=facts,
        )
    if layout.memory_v1 is not None:
        return CheckResult(
            "cgroup_controllers",
            Status.OK,
            f"v2 controllers: {listed}; memory accounting from the v1 memcg at "
            f"{layout.memory_v1.mount_point}",
            facts=facts,
        )
    return CheckResult(
        "cgroup_controllers",
        Status.WARN,
        f"v2 controllers: {listed}; no memory controller anywhere, so no per-group usage",
        "Enable the memory controller (cgroup_enable=memory, +memory in subtree_control).",
        facts=facts,
    )


def _find_child_group(directory: Path) -> Path | None:
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return Path(entry.path)
    return None


def check_cgroup_kill(layout: CgroupLayout | None, proc_root: str = "/proc") -> CheckResult:
    """``cgroup.kill`` exists only in non-root groups, so look at our group, else (as root) at
    a probe group made and removed at once, else at an existing child group."""
    remedy = "Use Linux 5.14+ with cgroup2 for one-write group kills (else members are killed)."
    if layout is None or layout.unified is None:
        return CheckResult(
            "cgroup_kill",
            Status.WARN,
            "no cgroup2 hierarchy: group victims are killed member by member",
            remedy,
        )
    try:
        own = layout.v2_dir(cgroupfs.own_cgroup("self", proc_root) or "/")
    except (OSError, KernelError) as exc:
        return CheckResult("cgroup_kill", Status.WARN, f"cannot find our group: {exc}", remedy)
    probe_dir: Path | None = None
    where = "our group"
    target: Path | None = own
    if not (own / "cgroup.kill").exists() and own == Path(layout.unified.mount_point):
        # The root group never has cgroup.kill. As root, make a probe group of our own (an
        # existing one may be removed by its owner while we look); else borrow a child.
        target, where = None, "an existing child group"
        if os.geteuid() == 0:
            probe_dir = own / f"pressured-doctor-{os.getpid()}"
            try:
                probe_dir.mkdir()
                target, where = probe_dir, "a probe group, removed at once"
            except OSError:
                probe_dir = None
        if target is None:
            target = _find_child_group(own)
    try:
        if target is None:
            return CheckResult(
                "cgroup_kill",
                Status.WARN,
                "no non-root group to look at and no right to create one",
                "Run doctor as root to check cgroup.kill.",
            )
        present = (target / "cgroup.kill").exists()
        frozen_file = (target / "cgroup.freeze").exists()
    finally:
        if probe_dir is not None:
            with contextlib.suppress(OSError):
                probe_dir.rmdir()
    facts: dict[str, object] = {
        "looked_at": str(target),
        "cgroup.kill": present,
        "cgroup.freeze": frozen_file,
    }
    if present:
        return CheckResult(
            "cgroup_kill", Status.OK, f"cgroup.kill present (looked at {where})", facts=facts
        )
    return CheckResult(
        "cgroup_kill",
        Status.WARN,
        f"cgroup.kill missing (looked at {where}): group victims are killed member by member",
        remedy,
        facts=facts,
    )


# -- memory, privileges ------------------------------------------------------------------------


def _gib(value: int) -> str:
    return f"{value / (1 << 30):.1f} GiB"


def check_swap(proc_root: str = "/proc") -> CheckResult:
    """Swap changes where pressure comes from (swap-in) and what a kill gives back."""
    try:
        meminfo = procfs.read_meminfo(proc_root)
    except OSError as exc:
        return CheckResult(
            "swap", Status.WARN, f"cannot read meminfo: {exc}", "Make /proc visible to pressured."
        )
    total, free = meminfo.get("SwapTotal", 0), meminfo.get("SwapFree", 0)
    facts = {"total_bytes": total, "free_bytes": free, "mem_total_bytes": meminfo.get("MemTotal")}
    if total == 0:
        detail = (
            "no swap: anonymous memory cannot be reclaimed, pressure comes from the page cache "
            "and the kernel OOM killer is close behind"
        )
    else:
        detail = f"{_gib(total)} total, {_gib(free)} free"
    return CheckResult("swap", Status.OK, detail, facts=facts)


def check_kill_rights(proc_root: str = "/proc") -> CheckResult:
    """Killing other users' processes needs root's CAP_KILL: essential for a daemon."""
    euid = os.geteuid()
    has_kill = caps.has_capability(caps.CAP_KILL, proc_root)
    facts = {"euid": euid, "CAP_KILL": has_kill}
    if has_kill:
        who = "root" if euid == 0 else f"uid {euid}"
        return CheckResult(
            "kill_rights", Status.OK, f"{who} with CAP_KILL", essential=True, facts=facts
        )
    return CheckResult(
        "kill_rights",
        Status.FAIL,
        f"uid {euid} without CAP_KILL: only processes of the same user can be killed",
        "Run pressured as root, or grant it CAP_KILL (AmbientCapabilities=CAP_KILL).",
        essential=True,
        facts=facts,
    )


_CAP_PURPOSE = {
    "CAP_KILL": "kill any process",
    "CAP_SYS_RESOURCE": "sub-2 s trigger windows",
    "CAP_SYS_NICE": "raise a dying victim's priority, real-time reaper",
    "CAP_IPC_LOCK": "mlockall beyond RLIMIT_MEMLOCK",
}


def check_capabilities(proc_root: str = "/proc") -> CheckResult:
    """Each capability buys one thing (see ``_CAP_PURPOSE``); name the ones missing."""
    held = caps.named_capabilities(proc_root)
    wanted = {name: held.get(name, False) for name in _CAP_PURPOSE}
    listing = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in wanted.items())
    missing = [name for name, ok in wanted.items() if not ok]
    if not missing:
        return CheckResult("capabilities", Status.OK, listing, facts=wanted)
    why = "; ".join(f"{name}: {_CAP_PURPOSE[name]}" for name in missing)
    return CheckResult(
        "capabilities",
        Status.WARN,
        f"{listing} (missing {why})",
        f"Grant {', '.join(missing)} (AmbientCapabilities= in the unit, or securityContext "
        "capabilities in Kubernetes) if those features matter here.",
        facts=wanted,
    )


def start_mlock_probe() -> subprocess.Popen[bytes] | None:
    """Start the child that tries ``mlockall`` (early, to overlap its start-up)."""
    return _start_child(_MLOCK_CHILD)


def check_mlockall(child: subprocess.Popen[bytes] | None = None) -> CheckResult:
    """Try ``mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT)`` in a short-lived child, so doctor's
    own memory stays unlocked; the daemon locks itself so it never stalls in reclaim."""
    remedy = "Grant CAP_IPC_LOCK or raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity in the unit)."
    child = child or start_mlock_probe()
    line = b""
    if child is not None:
        try:
            line = _read_line(child, PROBE_TIMEOUT_S)
        finally:
            _finish_child(child)
    try:
        answers = {int(key): int(value) for key, value in json.loads(line).items()}
    except (ValueError, AttributeError, TypeError):
        return CheckResult(
            "mlockall",
            Status.WARN,
            "the probe child gave no answer, so mlockall was not tried",
            f"Check that {sys.executable} can start; then run doctor again.",
        )
    facts: dict[str, object] = {
        label: _errno_name(answers[flags]) if answers[flags] else "ok"
        for flags, label in _MCL_LABELS.items()
        if flags in answers
    }
    if answers.get(_MCL_ALL) == 0:
        return CheckResult(
            "mlockall",
            Status.OK,
            "mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT) works (tried in a child)",
            facts=facts,
        )
    if answers.get(_MCL_NO_ONFAULT) == 0:
        return CheckResult(
            "mlockall",
            Status.WARN,
            "mlockall works only without MCL_ONFAULT: every mapping is populated and locked",
            "Use Linux 4.4+ for MCL_ONFAULT to keep the locked footprint small.",
            facts=facts,
        )
    return CheckResult(
        "mlockall",
        Status.WARN,
        f"mlockall refused ({facts.get(_MCL_LABELS[_MCL_ALL])}): the daemon's own "
        "pages can be reclaimed under pressure",
        remedy,
        facts=facts,
    )


# -- the whole run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DoctorReport:
    checks: tuple[CheckResult, ...]
    triggers: TriggerWindows | None
    duration_s: float

    @property
    def can_run(self) -> bool:
        """True unless an essential check failed."""
        return not any(c.essential and c.status is Status.FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {str(s): sum(c.status is s for c in self.checks) for s in Status}

    def as_dict(self) -> dict[str, object]:
        return {
            "can_run": self.can_run,
            "checks": [check.as_dict() for check in self.checks],
            "triggers": self.triggers.as_dict() if self.triggers else None,
            "summary": self.counts(),
            "duration_s": round(self.duration_s, 3),
        }


def _guarded(name: str, essential: bool, check: Callable[[], CheckResult]) -> CheckResult:
    """A bug in one check must not hide the others: report it as that check's result."""
    try:
        return check()
    except Exception as exc:  # any bug: turned into a visible failed check below
        return CheckResult(
            name,
            Status.FAIL if essential else Status.WARN,
            f"the check itself failed: {type(exc).__name__}: {exc}",
            "Report this to the pressured authors with the output of 'pressured doctor --json'.",
            essential=essential,
        )


def _probe_triggers_guarded(proc_root: str) -> TriggerProbe:
    try:
        return probe_trigger_windows(proc_root)
    except Exception as exc:  # any bug: reported as a failed psi_triggers check
        path = str(psi.system_pressure_path("memory", proc_root))
        return TriggerProbe(path, None, f"{type(exc).__name__}: {exc}")


def run_doctor(proc_root: str = "/proc") -> DoctorReport:
    """Run every check; the probe children start first so their start-up overlaps the rest."""
    started = time.monotonic()
    mlock_child = start_mlock_probe()
    mrelease_child = start_mrelease_probe()
    try:
        layout = _layout_or_none(proc_root)
        trigger_probe = _probe_triggers_guarded(proc_root)
        checks = (
            _guarded("kernel", False, check_kernel),
            _guarded("psi_system", True, lambda: check_psi_system(proc_root)),
            _guarded("psi_cgroup", False, lambda: check_psi_cgroup(layout, proc_root)),
            _guarded("psi_triggers", True, lambda: check_psi_triggers(trigger_probe)),
            _guarded("trigger_readers", False, lambda: check_trigger_readers(trigger_probe)),
            _guarded("pidfd", True, check_pidfd),
            _guarded("process_mrelease", False, lambda: check_mrelease(mrelease_child)),
            _guarded("cgroup_layout", False, lambda: check_cgroup_layout(layout)),
            _guarded(
                "cgroup_controllers", False, lambda: check_cgroup_controllers(layout, proc_root)
            ),
            _guarded("cgroup_kill", False, lambda: check_cgroup_kill(layout, proc_root)),
            _guarded("swap", False, lambda: check_swap(proc_root)),
            _guarded("kill_rights", True, lambda: check_kill_rights(proc_root)),
            _guarded("capabilities", False, lambda: check_capabilities(proc_root)),
            _guarded("mlockall", False, lambda: check_mlockall(mlock_child)),
        )
    finally:
        for child in (mlock_child, mrelease_child):
            if child is not None:
                _finish_child(child)
    return DoctorReport(checks, trigger_probe.windows, time.monotonic() - started)
