"""cgroup layout discovery (this host and recorded samples) and the Cgroup operations on a real
scratch group: membership, memory figures, children, freeze/thaw and cgroup.kill.

The samples in ``tests/data/mountinfo`` are realistic ``/proc/self/mountinfo`` files for each
layout pressured meets: pure v2 (Fedora), hybrid (Ubuntu 20.04), v1 only (CentOS 7), and
containers whose cgroup mounts have a subpath as their root (Docker, Kubernetes).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pressured.errors import KernelError, ParseError
from pressured.kernel import cgroupfs
from pressured.kernel.cgroupfs import CgroupLayout, LayoutMode, parse_mountinfo
from pressured.testing.scratch import ScratchGroup

SAMPLES = Path(__file__).parent / "data" / "mountinfo"
WAIT_S = 10.0
MIB = 1 << 20


def sample(name: str) -> CgroupLayout:
    return parse_mountinfo((SAMPLES / name).read_text(), name)


def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes (a bounded wait, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def events(group: cgroupfs.Cgroup) -> dict[str, int]:
    path = group.file("cgroup.events")
    return cgroupfs.parse_flat_keyed(path.read_text(), str(path))


# -- this host ---------------------------------------------------------------------------------


def test_host_layout_mounts_are_real_hierarchies() -> None:
    """Whatever the layout, its mount points hold the files of the kind of hierarchy found."""
    layout = cgroupfs.discover_layout()
    if layout.unified is not None:
        assert (Path(layout.unified.mount_point) / "cgroup.controllers").exists()
    if layout.memory_v1 is not None:
        assert (Path(layout.memory_v1.mount_point) / "memory.limit_in_bytes").exists()


def test_host_is_hybrid_with_both_mounts() -> None:
    """On the dev/CI hosts: hybrid, cgroup2 at /sys/fs/cgroup/unified, v1 memory beside it."""
    unified = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    memory = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    if not (unified.exists() and memory.exists()):
        pytest.skip("not the hybrid layout of the dev/CI hosts")
    layout = cgroupfs.discover_layout()
    assert layout.mode is LayoutMode.HYBRID
    assert layout.unified is not None
    assert layout.unified.mount_point == "/sys/fs/cgroup/unified"
    assert layout.memory_v1 is not None
    assert layout.memory_v1.mount_point == "/sys/fs/cgroup/memory"


def test_own_cgroup_is_an_existing_v2_directory() -> None:
    """Our own v2 path maps to a directory under the cgroup2 mount."""
    layout = cgroupfs.discover_layout()
    if layout.unified is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    own = cgroupfs.own_cgroup()
    assert own is not None
    assert layout.v2_dir(own).is_dir()


# -- recorded samples ------------------------------------------------------------------------------


def test_sample_pure_v2() -> None:
    """Fedora: one cgroup2 mount at /sys/fs/cgroup, no v1 hierarchies."""
    layout = sample("v2-fedora.txt")
    assert layout.mode is LayoutMode.V2
    assert layout.unified is not None
    assert layout.unified.mount_point == "/sys/fs/cgroup"
    assert layout.unified.root == "/"
    assert layout.v1 == {}


def test_sample_hybrid() -> None:
    """Ubuntu 20.04: cgroup2 at .../unified and a v1 memory hierarchy."""
    layout = sample("hybrid-ubuntu2004.txt")
    assert layout.mode is LayoutMode.HYBRID
    assert layout.unified is not None
    assert layout.unified.mount_point == "/sys/fs/cgroup/unified"
    assert layout.memory_v1 is not None
    assert layout.memory_v1.mount_point == "/sys/fs/cgroup/memory"
    assert layout.v1["cpuacct"].mount_point == "/sys/fs/cgroup/cpu,cpuacct"


def test_sample_hybrid_flags_are_not_controllers() -> None:
    """Mount flags such as 'xattr' and 'name=systemd' are not taken for controllers."""
    layout = sample("hybrid-ubuntu2004.txt")
    assert "xattr" not in layout.v1
    assert "name=systemd" not in layout.v1
    assert {"memory", "cpu", "pids", "net_prio", "hugetlb"} <= set(layout.v1)


def test_sample_v1_only() -> None:
    """CentOS 7: v1 hierarchies only, no cgroup2, so no v2 directories."""
    layout = sample("v1-centos7.txt")
    assert layout.mode is LayoutMode.V1
    assert layout.unified is None
    assert layout.memory_v1 is not None
    assert layout.v1_dir("memory", "/user.slice") == Path("/sys/fs/cgroup/memory/user.slice")
    with pytest.raises(KernelError, match="no cgroup2"):
        layout.v2_dir("/")


def test_sample_without_cgroups_is_mode_none() -> None:
    """A mountinfo without any cgroup mount gives mode none."""
    text = (SAMPLES / "v2-fedora.txt").read_text().replace("cgroup2 cgroup2", "tmpfs tmpfs")
    assert parse_mountinfo(text).mode is LayoutMode.NONE


def test_container_mount_root_is_stripped() -> None:
    """Docker on a v2 host: the mount's root is our scope, so that path maps to the mount."""
    layout = sample("container-docker-v2.txt")
    assert layout.unified is not None
    scope = "/system.slice/docker-5e1c9a7d2f0b.scope"
    assert layout.unified.root == scope
    assert layout.v2_dir(scope) == Path("/sys/fs/cgroup")
    assert layout.v2_dir(f"{scope}/workers") == Path("/sys/fs/cgroup/workers")


def test_container_namespace_relative_paths_are_kept() -> None:
    """Paths that do not start with the mount root (cgroup namespace) are taken as relative."""
    layout = sample("container-docker-v2.txt")
    assert layout.v2_dir("/") == Path("/sys/fs/cgroup")
    assert layout.v2_dir("/workers") == Path("/sys/fs/cgroup/workers")


def test_container_hybrid_kubernetes_roots() -> None:
    """A Kubernetes pod on a hybrid node: both hierarchies rooted at the container's group."""
    layout = sample("container-k8s-hybrid.txt")
    assert layout.mode is LayoutMode.HYBRID
    path = "/kubepods/burstable/pod7c1d/3a9f"
    assert layout.v2_dir(path) == Path("/sys/fs/cgroup/unified")
    assert layout.v1_dir("memory", path) == Path("/sys/fs/cgroup/memory")


def test_escaped_mount_points_are_unescaped() -> None:
    """Octal escapes in mount points (space, backslash) are decoded."""
    layout = sample("escaped-mount-point.txt")
    assert layout.unified is not None
    assert layout.unified.mount_point == "/mnt/my cgroups"
    assert layout.memory_v1 is not None
    assert layout.memory_v1.mount_point == "/mnt/back\\slash"


def test_mountinfo_line_without_separator_is_parse_error() -> None:
    """A line without ' - ' is a ParseError naming the line."""
    with pytest.raises(ParseError, match="line 1"):
        parse_mountinfo("29 1 8:2 / / rw,relatime ext4 /dev/sda2 rw\n")


def test_parse_flat_keyed() -> None:
    """'key value' files parse into ints; a non-integer value is a ParseError."""
    assert cgroupfs.parse_flat_keyed("populated 1\nfrozen 0\n", "x") == {
        "populated": 1,
        "frozen": 0,
    }
    with pytest.raises(ParseError, match="not 'key integer'"):
        cgroupfs.parse_flat_keyed("populated yes\n", "x")


# -- a real scratch group -----------------------------------------------------------------------


def test_members_lists_a_spawned_process(scratch: ScratchGroup) -> None:
    """A process started in the group is listed in its cgroup.procs."""
    proc = scratch.spawn_workload("sleep")
    assert scratch.group.members() == [proc.pid]
    assert scratch.group.populated()


def test_memory_figures_show_limit_and_usage(scratch: ScratchGroup) -> None:
    """Usage covers a 16 MiB hog and the limit is the group's 64 MiB (v1 memcg on hybrid)."""
    scratch.spawn_workload("hog", "16")
    figures = scratch.group.memory()
    expected = "v1" if scratch.layout.mode is LayoutMode.HYBRID else "v2"
    assert figures.source == expected
    assert figures.limit_bytes == 64 * MIB
    assert 16 * MIB <= figures.current_bytes <= 64 * MIB


def test_memory_stat_has_anonymous_figures(scratch: ScratchGroup) -> None:
    """memory.stat (v2 or the v1 memcg) parses into a dict that accounts anonymous memory."""
    scratch.spawn_workload("hog", "8")
    stat = scratch.group.memory_stat()
    assert ("rss" in stat) or ("anon" in stat)


def test_children_and_all_members(scratch: ScratchGroup) -> None:
    """A subgroup is listed as a child, and its process counts in all_members."""
    child = scratch.child("worker")
    proc = scratch.spawn_workload("sleep", group=child)
    assert [c.path for c in scratch.group.children()] == [f"{scratch.path}/worker"]
    assert scratch.group.members() == []
    assert scratch.group.all_members() == [proc.pid]


def test_child_groups_find_their_memory_under_the_scopes_v1_memcg(scratch: ScratchGroup) -> None:
    """On a hybrid host the scope's v1 memcg need not mirror its v2 path (the scratch group's
    does not: it sits under this process's own memcg). A child group's memory is then under
    the scope's memcg, not at the child's mirrored v2 path; without that, cgroup policies
    ranked every child at zero bytes."""
    child = scratch.child("worker", limit_bytes=48 * MIB)
    scratch.spawn_workload("hog", "16", group=child)
    [found] = scratch.group.children()
    figures = found.memory()
    if scratch.layout.mode is LayoutMode.HYBRID:
        assert found.memcg_v1_path == f"{scratch.memcg_path}/worker"
    assert figures.limit_bytes == 48 * MIB
    assert 16 * MIB <= figures.current_bytes <= 48 * MIB


def test_freeze_and_thaw(scratch: ScratchGroup) -> None:
    """Freezing sets cgroup.events 'frozen 1' with a member inside; thawing clears it."""
    proc = scratch.spawn_workload("sleep")
    scratch.group.freeze()
    try:
        assert wait_until(lambda: events(scratch.group)["frozen"] == 1)
        assert proc.poll() is None
    finally:
        scratch.group.thaw()
    assert wait_until(lambda: events(scratch.group)["frozen"] == 0)


def test_cgroup_kill_kills_a_sleeper(scratch: ScratchGroup) -> None:
    """One write to cgroup.kill SIGKILLs every member and empties the group."""
    proc = scratch.spawn_workload("sleep")
    scratch.group.kill()
    assert proc.wait(WAIT_S) == -signal.SIGKILL
    assert wait_until(lambda: not scratch.group.populated())


def test_group_pressure_is_readable(scratch: ScratchGroup) -> None:
    """The scratch group's memory.pressure parses (v2 gives PSI even on hybrid hosts)."""
    pressure = scratch.group.pressure()
    assert pressure.full is not None


def test_kill_on_removed_group_raises_file_not_found() -> None:
    """cgroup.kill on a group that no longer exists is FileNotFoundError, not KernelError."""
    layout = cgroupfs.discover_layout()
    if layout.unified is None or os.geteuid() != 0:
        pytest.skip("needs root and a cgroup2 hierarchy")
    group = cgroupfs.Cgroup(layout, f"/pressured-test-gone-{os.getpid()}")
    with pytest.raises(FileNotFoundError):
        group.kill()


@pytest.mark.kernel
def test_member_paths_maps_every_pid_to_its_own_subgroup(scratch: ScratchGroup) -> None:
    """One walk gives each member's exact v2 path, the same the kernel reports in /proc."""
    child = scratch.child("inner")
    top = scratch.spawn_workload("sleep")
    inner = scratch.spawn_workload("sleep", group=child)
    paths = scratch.group.member_paths()
    assert paths[top.pid] == scratch.path
    assert paths[inner.pid] == child.path
    for pid, path in paths.items():
        assert cgroupfs.own_cgroup(pid) == path
