"""Cgroup names in every form a user already has, on the real kernel: `rank --cgroup`, TOML,
PRESSURED_* variables, protect_cgroups and ``pressured.watch`` all find the same group.

Imports only names that existed before path forms were accepted, so these tests run (and
fail) on the old code too."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pressured.config import load_settings
from pressured.errors import ConfigError
from pressured.kernel import cgroupfs
from pressured.testing.scratch import ScratchGroup
from pressured.watch import watch


def forms(group_path: str) -> dict[str, str]:
    """The three forms of one group on this host."""
    layout = cgroupfs.discover_layout()
    assert layout.unified is not None
    return {
        "relative": group_path.lstrip("/"),
        "absolute": f"{layout.unified.mount_point}{group_path}",
        "proc_line": f"0::{group_path}",
    }


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pressured", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ),
    )


# -- every place a cgroup is named, on the real kernel ---------------------------------------


@pytest.mark.parametrize("form", ["relative", "absolute", "proc_line"])
def test_rank_cgroup_flag_accepts_each_form(scratch: ScratchGroup, form: str) -> None:
    """`pressured rank --cgroup FORM` finds the scratch group's process (no doubled path)."""
    proc = scratch.spawn(["sleep", "60"], stdout=subprocess.DEVNULL)
    done = run_cli("rank", "--json", "-n", "50", "--cgroup", forms(scratch.path)[form])
    assert done.returncode == 0, done.stderr
    (scope,) = json.loads(done.stdout)
    assert scope["scope"] == scratch.path
    assert proc.pid in [candidate["pid"] for candidate in scope["candidates"]]


@pytest.mark.parametrize("form", ["relative", "absolute", "proc_line"])
def test_toml_and_environment_accept_each_form(
    scratch: ScratchGroup, form: str, tmp_path: Path
) -> None:
    """A TOML scope, a PRESSURED_SCOPES__0__CGROUP variable and protect_cgroups all resolve
    to the existing group."""
    text = forms(scratch.path)[form]
    config = tmp_path / "p.toml"
    config.write_text(f"[[scopes]]\ncgroup = {json.dumps(text)}\n")
    config.chmod(0o600)
    from_file = load_settings(config, environ={})
    from_env = load_settings(
        None,
        environ={
            "PRESSURED_SCOPES__0__CGROUP": text,
            "PRESSURED_GUARD__PROTECT_CGROUPS": json.dumps([text]),
        },
    )
    layout = cgroupfs.discover_layout()
    for settings in (from_file, from_env):
        (scope,) = settings.scopes
        assert scope.cgroup == scratch.path
        assert cgroupfs.Cgroup(layout, scope.cgroup).exists()
    assert from_env.guard.protect_cgroups == (scratch.path,)


@pytest.mark.parametrize("form", ["relative", "absolute", "proc_line"])
def test_library_watch_arms_the_group_named_in_each_form(scratch: ScratchGroup, form: str) -> None:
    """pressured.watch(FORM) arms its trigger on the scratch group's memory.pressure."""

    async def armed_paths() -> set[str]:
        async with watch(forms(scratch.path)[form]) as events:
            return {armed.path for armed in events.armed}

    expected = str(scratch.group.pressure_path("memory"))
    assert asyncio.run(armed_paths()) == {expected}


def test_check_refuses_a_path_outside_the_mount_naming_the_forms() -> None:
    """`pressured check --cgroup /proc/1/cgroup` exits 2 listing the accepted forms."""
    done = run_cli("check", "--no-policies", "--cgroup", "/proc/1/cgroup")
    assert done.returncode == 2
    assert "accepted forms" in done.stderr
    assert "--cgroup" in done.stderr


def test_library_watch_refuses_a_v1_line() -> None:
    """pressured.watch('4:memory:/x') raises ConfigError before opening anything."""

    async def arm() -> None:
        async with watch("4:memory:/x"):
            pass

    with pytest.raises(ConfigError, match="accepted forms"):
        asyncio.run(arm())


def test_every_bad_value_is_reported_at_once_with_its_variable() -> None:
    """All validation errors come together; an environment override names its variable."""
    with pytest.raises(ConfigError) as caught:
        load_settings(
            None,
            environ={
                "PRESSURED_DAEMON__IO_THREADS": "many",
                "PRESSURED_METRICS__PORT": "-1",
                "PRESSURED_SCOPES__0__CGROUP": "/proc/1/cgroup",
            },
        )
    problems = dict(getattr(caught.value, "problems", ()))
    assert set(problems) == {"daemon.io_threads", "metrics.port", "scopes.0.cgroup"}
    assert "PRESSURED_DAEMON__IO_THREADS" in problems["daemon.io_threads"]
    assert "PRESSURED_SCOPES__0__CGROUP" in problems["scopes.0.cgroup"]
