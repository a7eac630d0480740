"""The one function that reads a cgroup name: relative to the mount, absolute under the
mount, or a /proc/PID/cgroup line, and a clear refusal of anything else."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pressured.cgroup_paths import (
    CgroupMounts,
    CgroupPathError,
    normalize_cgroup_path,
    parse_cgroup_mounts,
)
from pressured.kernel import cgroupfs

HYBRID = CgroupMounts(v2=("/sys/fs/cgroup/unified",), memory_v1=("/sys/fs/cgroup/memory",))
PURE_V2 = CgroupMounts(v2=("/sys/fs/cgroup",), memory_v1=())


def forms(group_path: str) -> dict[str, str]:
    """The three forms of one group on this host."""
    layout = cgroupfs.discover_layout()
    assert layout.unified is not None
    return {
        "relative": group_path.lstrip("/"),
        "absolute": f"{layout.unified.mount_point}{group_path}",
        "proc_line": f"0::{group_path}",
    }


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pressured", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


# -- the normalising function (pure) -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mounts", "expected"),
    [
        ("/jobs/batch", HYBRID, "/jobs/batch"),
        ("jobs/batch", HYBRID, "/jobs/batch"),
        ("/sys/fs/cgroup/unified/jobs", HYBRID, "/jobs"),
        ("/sys/fs/cgroup/unified", HYBRID, "/"),
        ("/sys/fs/cgroup/jobs/", PURE_V2, "/jobs"),
        ("0::/jobs\n", PURE_V2, "/jobs"),
        ("0::/", PURE_V2, "/"),
        ("//jobs//batch/", PURE_V2, "/jobs/batch"),
    ],
)
def test_every_accepted_form_names_the_same_group(
    text: str, mounts: CgroupMounts, expected: str
) -> None:
    """Relative, absolute-under-the-mount and /proc/PID/cgroup forms become one path."""
    assert normalize_cgroup_path(text, mounts=mounts) == expected


@pytest.mark.parametrize(
    ("text", "mounts"),
    [
        ("/sys/fs/cgroup/jobs", HYBRID),  # the tmpfs above the mounts, not cgroup2
        ("/sys/fs/cgroup/memory/jobs", HYBRID),  # v1 memory hierarchy for a v2 group
        ("4:memory:/jobs", HYBRID),
        ("/proc/1/cgroup", PURE_V2),
        ("/jobs/../etc", PURE_V2),
        ("", PURE_V2),
        ("/jobs\n/other", PURE_V2),
    ],
)
def test_other_forms_are_refused_with_the_accepted_ones_listed(
    text: str, mounts: CgroupMounts
) -> None:
    """Anything else is an error that says which forms are accepted (or why it is wrong)."""
    with pytest.raises(CgroupPathError) as caught:
        normalize_cgroup_path(text, mounts=mounts)
    message = str(caught.value)
    assert "accepted forms" in message or "control characters" in message


def test_memcg_v1_accepts_its_own_mount_and_proc_line() -> None:
    """memcg_v1 takes the v1 memory mount and the memory line of /proc/PID/cgroup."""
    assert normalize_cgroup_path(
        "/sys/fs/cgroup/memory/a/b", hierarchy="memory", mounts=HYBRID
    ) == ("/a/b")
    assert normalize_cgroup_path("4:cpu,memory:/a", hierarchy="memory", mounts=HYBRID) == "/a"
    with pytest.raises(CgroupPathError):
        normalize_cgroup_path("0::/a", hierarchy="memory", mounts=HYBRID)


def test_mounts_are_read_from_mountinfo() -> None:
    """cgroup2 and the v1 memory controller's mount points come from mountinfo lines."""
    text = (
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "22 1 0:5 / /proc rw - proc proc rw\n"
    )
    assert parse_cgroup_mounts(text) == HYBRID
