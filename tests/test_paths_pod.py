"""The sidecar's `pod` scope on the real kernel: the group holding the container's own group,
found with and without a cgroup namespace, and a clear refusal when it cannot be seen."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from pressured.testing.scratch import ScratchGroup

FIND_POD = (
    "from pressured.kernel import cgroupfs; from pressured.podscope import find_pod_group; "
    "print(find_pod_group(cgroupfs.discover_layout()).path)"
)


def run_in(
    scratch: ScratchGroup, container: str, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` inside ``scratch/container`` (joined before exec) and wait for it."""
    group = scratch.child(container)
    proc = scratch.spawn(argv, group=group, env={**os.environ, **(env or {})})
    stdout, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, b"")


def needs_unshare() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("util-linux unshare is not installed (needed to make a cgroup namespace)")


def test_pod_group_is_the_parent_of_the_own_group(scratch: ScratchGroup) -> None:
    """Without a cgroup namespace the pod group is the parent of /proc/self/cgroup's group."""
    done = run_in(scratch, "ctr", [sys.executable, "-c", FIND_POD])
    assert done.returncode == 0
    assert done.stdout.decode().strip() == scratch.path


def test_pod_group_is_found_inside_a_cgroup_namespace(scratch: ScratchGroup) -> None:
    """In a cgroup namespace (/proc/self/cgroup says 0::/) the host mount's root ('/../..')
    tells how deep our group is, and its cgroup.procs which one: the pod is its parent."""
    needs_unshare()
    done = run_in(scratch, "ctr", ["unshare", "--cgroup", sys.executable, "-c", FIND_POD])
    assert done.returncode == 0
    assert done.stdout.decode().strip() == scratch.path


def test_pod_scope_is_refused_when_only_the_container_group_is_mounted(
    scratch: ScratchGroup,
) -> None:
    """A runtime-style cgroup2 mount rooted at the container's own group hides the pod:
    `check` says to mount the host's hierarchy."""
    needs_unshare()
    # Like a container runtime: a private mount namespace, a tmpfs over /sys/fs/cgroup and a
    # fresh cgroup2 mount there, which a cgroup namespace roots at the container's own group.
    mount_point = (
        "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else ("/sys/fs/cgroup")
    )
    script = (
        f"mount -t tmpfs none /sys/fs/cgroup && mkdir -p {mount_point} && "
        f"mount -t cgroup2 none {mount_point} && exec {sys.executable} -m pressured check "
        "--no-policies; "
    )
    done = run_in(
        scratch,
        "ctr",
        ["unshare", "--cgroup", "--mount", "sh", "-c", script],
        env={"PRESSURED_DAEMON__MODE": "sidecar"},
    )
    assert done.returncode == 0
    (scope,) = json.loads(done.stdout)["scopes"]
    assert "hostPath" in scope["on_this_host"]["problem"]


def test_sidecar_rank_sees_the_pods_other_container(scratch: ScratchGroup) -> None:
    """`pressured rank` in sidecar mode, in its own cgroup namespace, ranks the process of a
    sibling container of the same pod."""
    needs_unshare()
    app_group = scratch.child("app")
    app = scratch.spawn(["sleep", "120"], group=app_group, stdout=subprocess.DEVNULL)
    done = run_in(
        scratch,
        "sidecar",
        ["unshare", "--cgroup", sys.executable, "-m", "pressured", "rank", "--json", "-n", "50"],
        env={"PRESSURED_DAEMON__MODE": "sidecar"},
    )
    assert done.returncode == 0
    (scope,) = json.loads(done.stdout)
    assert scope["scope"] == scratch.path
    assert app.pid in [candidate["pid"] for candidate in scope["candidates"]]


def test_sidecar_daemon_refuses_to_start_without_the_pod_group_in_sight(
    scratch: ScratchGroup,
) -> None:
    """`pressured run` in sidecar mode exits 2 (bad configuration, nothing armed) with the
    remedy when the pod's group cannot be seen."""
    needs_unshare()
    mount_point = (
        "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else ("/sys/fs/cgroup")
    )
    script = (
        f"mount -t tmpfs none /sys/fs/cgroup && mkdir -p {mount_point} && "
        f"mount -t cgroup2 none {mount_point} && exec {sys.executable} -m pressured run "
        "--dry-run 2>&1"
    )
    done = run_in(
        scratch,
        "ctr",
        ["unshare", "--cgroup", "--mount", "sh", "-c", script],
        env={"PRESSURED_DAEMON__MODE": "sidecar", "PRESSURED_METRICS__ENABLED": "false"},
    )
    assert done.returncode == 2
    assert b"scopes.0.cgroup" in done.stdout
    assert b"hostPath" in done.stdout


WATCH_POD = (
    "import asyncio; from pressured.watch import watch\n"
    "async def main():\n"
    "    async with watch('pod') as events:\n"
    "        print({armed.path for armed in events.armed}.pop())\n"
    "asyncio.run(main())\n"
)


def test_library_watch_pod_arms_the_pods_pressure_file(scratch: ScratchGroup) -> None:
    """pressured.watch('pod') from inside a cgroup namespace arms the pod group's trigger."""
    needs_unshare()
    done = run_in(scratch, "ctr", ["unshare", "--cgroup", sys.executable, "-c", WATCH_POD])
    assert done.returncode == 0
    assert done.stdout.decode().strip() == str(scratch.group.pressure_path("memory"))
