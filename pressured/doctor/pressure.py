"""Pressure stall information: the system and cgroup pressure files, and which trigger windows
the kernel accepts from this process (found by arming them)."""

from __future__ import annotations

import errno as errno_mod
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pressured.doctor.probes import errno_name
from pressured.doctor.result import CheckResult, Status
from pressured.errors import KernelError, ParseError, TriggerError
from pressured.kernel import cgroupfs, psi
from pressured.kernel.cgroupfs import CgroupLayout


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
        probes[_spec_text(fast)] = errno_name(exc.errno)
        if exc.errno != errno_mod.EINVAL:
            return TriggerProbe(path, None, str(exc), exc.errno)
    try:
        _arm_and_close(path, slow)
    except TriggerError as exc:
        probes[_spec_text(slow)] = errno_name(exc.errno)
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
            facts={"path": probe.path, "errno": errno_name(probe.errno)},
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
