"""The watchdog thread kills for a stuck loop under real pressure."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup

pytestmark = [pytest.mark.kernel, pytest.mark.pressure]


def test_blocked_loop_under_pressure_is_rescued_by_the_watchdog(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path
) -> None:
    """A plugin blocks the loop for 12 s; the watchdog thread kills the thrasher meanwhile."""
    config = write_config(
        tmp_path / "p.toml",
        scope_config(
            scratch.path,
            scratch.memcg_path,
            policies='[[scopes.policies]]\nname = "tests.fault_policies:BlockTheLoop"\n'
            "options = { seconds = 12 }\ntimeout_ms = 60000\n",
        )
        + "\n[watchdog]\nstall_limit_ms = 1000\n",
    )
    bystander = scratch.spawn_workload("sleep")
    with Daemon(config) as daemon:
        daemon.wait_for("controller.ready", 20)
        daemon.wait_for("watchdog.started", 5)
        thrasher = scratch.spawn_workload("thrash", thrash_file)
        stuck = daemon.wait_for("watchdog.loop_stuck", 30)
        assert stuck["scope"] == scratch.path
        killed = daemon.wait_for("watchdog.killed", 10)
        assert killed["pid"] == thrasher.pid
        assert killed["exited"] is True
        assert thrasher.wait(5) == -signal.SIGKILL
        assert bystander.poll() is None
        # The loop comes back after the plugin returns, and the daemon still stops cleanly.
        assert daemon.stop(40) == 0
