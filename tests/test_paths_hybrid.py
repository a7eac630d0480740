"""Hybrid hosts: a scope finds its v1 memory figures when the memcg is not at the mirrored
path, `--cgroup` keeps a configured memcg_v1, and `check` says where figures come from."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pressured.config import load_settings
from pressured.kernel import cgroupfs
from pressured.kernel.cgroupfs import Cgroup, LayoutMode
from pressured.kernel.memcg_v1 import resolve_memory_source
from pressured.testing.scratch import scratch_unavailable_reason

LIMIT = 48 << 20


def _hybrid_skip_reason() -> str | None:
    reason = scratch_unavailable_reason()
    if reason:
        return reason
    if cgroupfs.discover_layout().mode is not LayoutMode.HYBRID:
        return "v1 memcg discovery only applies to hybrid hosts (memory on cgroup v1)"
    return None


requires_hybrid = pytest.mark.skipif(
    _hybrid_skip_reason() is not None, reason=f"real-kernel test: {_hybrid_skip_reason()}"
)


@dataclass
class SplitGroup:
    """A v2 group and a v1 memcg at a *different* path, one sleeping process in both."""

    v2_path: str
    v1_path: str
    v1_dir: Path
    process: subprocess.Popen[bytes]


@pytest.fixture
def split_group() -> Iterator[SplitGroup]:
    layout = cgroupfs.discover_layout()
    name = f"pressured-test-{uuid.uuid4().hex[:10]}"
    v2 = Cgroup(layout, f"/{name}").create()
    own_memcg = (cgroupfs.own_memcg_v1() or "/").rstrip("/")
    # Two levels down and under another name: nothing mirrors the v2 path.
    v1_path = f"{own_memcg}/{name}-elsewhere/deeper"
    v1_dir = layout.v1_dir("memory", v1_path)
    process: subprocess.Popen[bytes] | None = None
    try:
        v1_dir.mkdir(parents=True)
        (v1_dir / "memory.limit_in_bytes").write_text(str(LIMIT))
        joins = f"echo $$ > {v2.file('cgroup.procs')}; echo $$ > {v1_dir / 'cgroup.procs'}"
        process = subprocess.Popen(["/bin/sh", "-c", f"{joins}; exec sleep 120"])
        deadline = time.monotonic() + 10
        while process.pid not in v2.members() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.pid in v2.members()
        yield SplitGroup(v2.path, v1_path, v1_dir, process)
    finally:
        if process is not None:
            process.kill()
            process.wait(timeout=10)
        with contextlib.suppress(OSError):
            v2.directory.rmdir()
        for directory in (v1_dir, v1_dir.parent):
            for _attempt in range(50):
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


@requires_hybrid
def test_scope_finds_v1_figures_of_its_members_when_memcg_is_not_mirrored(
    split_group: SplitGroup,
) -> None:
    """No memcg_v1 configured, none at the mirrored path: the members' v1 group is used."""
    settings = load_settings(None, environ={}, cgroup=split_group.v2_path)
    (scope,) = settings.scopes
    assert scope.memcg_v1 is None
    group = Cgroup(cgroupfs.discover_layout(), scope.cgroup or "/", scope.memcg_v1)
    source = resolve_memory_source(group)
    assert source["source"] == "v1"
    figures = group.memory()
    assert figures.source == "v1"
    assert figures.limit_bytes == LIMIT
    assert group.memcg_v1_path == split_group.v1_path


@requires_hybrid
def test_check_says_where_memory_figures_come_from(split_group: SplitGroup) -> None:
    """`pressured check --cgroup` names the v1 group found and how it was found."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pressured",
            "check",
            "--no-policies",
            "--cgroup",
            split_group.v2_path,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stderr
    memory = json.loads(done.stdout)["scopes"][0]["on_this_host"]["memory"]
    assert memory["source"] == "v1"
    assert memory["path"] == str(split_group.v1_dir)
    assert "/proc/PID/cgroup" in memory["how"]


def test_cgroup_flag_keeps_a_configured_memcg_v1(tmp_path: Path) -> None:
    """--cgroup replaces the first scope's group but not its memcg_v1."""
    config = tmp_path / "p.toml"
    config.write_text("[[scopes]]\ncgroup = '/a'\nmemcg_v1 = '/elsewhere/a'\n")
    config.chmod(0o600)
    settings = load_settings(config, environ={}, cgroup="/b")
    assert settings.scopes[0].cgroup == "/b"
    assert settings.scopes[0].memcg_v1 == "/elsewhere/a"


@requires_hybrid
def test_start_up_log_says_where_memory_figures_come_from(split_group: SplitGroup) -> None:
    """A dry-run daemon on the split group logs scope.memory_source with the v1 group found."""
    from pressured.testing.daemon import Daemon

    env = {"PRESSURED_METRICS__ENABLED": "false", "PRESSURED_DAEMON__MLOCKALL": "false"}
    with Daemon(None, "--dry-run", "--cgroup", split_group.v2_path, env=env) as daemon:
        line = daemon.wait_for("scope.memory_source", timeout_s=60)
    assert line["source"] == "v1"
    assert line["path"] == str(split_group.v1_dir)


@requires_hybrid
def test_a_v1_group_shared_with_other_processes_lends_no_figures(split_group: SplitGroup) -> None:
    """A v2 group whose members sit in a v1 memcg that also holds a process outside the group
    gets no figures (they would describe more than the group), not the shared group's."""
    layout = cgroupfs.discover_layout()
    outsider_v2 = Cgroup(layout, f"{split_group.v2_path}-outsider").create()
    outsider = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            f"echo $$ > {outsider_v2.file('cgroup.procs')}; "
            f"echo $$ > {split_group.v1_dir / 'cgroup.procs'}; exec sleep 120",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        v1_procs = split_group.v1_dir / "cgroup.procs"
        # The shell joins the v2 group, then the v1 one: wait for both, or the check can run
        # between the two writes (seen once in CI).
        while time.monotonic() < deadline and not (
            outsider.pid in outsider_v2.members()
            and str(outsider.pid) in v1_procs.read_text().split()
        ):
            time.sleep(0.01)
        group = Cgroup(layout, split_group.v2_path)
        assert resolve_memory_source(group)["source"] == "none"
        assert group.memcg_v1_path is None
    finally:
        outsider.kill()
        outsider.wait(timeout=10)
        for _attempt in range(50):
            try:
                outsider_v2.directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)
