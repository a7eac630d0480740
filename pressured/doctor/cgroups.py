"""cgroups: the layout (v2, hybrid, v1), the memory controller, and ``cgroup.kill``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pressured.doctor.result import CheckResult, Status
from pressured.errors import KernelError, ParseError
from pressured.kernel import cgroupfs
from pressured.kernel.cgroupfs import CgroupLayout, LayoutMode


def layout_or_none(proc_root: str) -> CgroupLayout | None:
    try:
        return cgroupfs.discover_layout(proc_root)
    except (OSError, ParseError):
        return None


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
