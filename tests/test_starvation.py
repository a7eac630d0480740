"""A frequent reader of the watched pressure file silences unprivileged triggers; the daemon
notices the stall growing without events, says so, and acts anyway."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pressured.kernel.caps import CAP_SYS_RESOURCE, has_capability
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.pressure,
    pytest.mark.skipif(
        has_capability(CAP_SYS_RESOURCE),
        reason="privileged triggers use the kernel's RT poller, which readers cannot starve",
    ),
]

READER = """
import sys, time
path = sys.argv[1]
while True:
    with open(path) as handle:
        handle.read()
    time.sleep(0.005)
"""


def test_starved_trigger_is_reported_and_pressure_still_acted_on(
    scratch: ScratchGroup, thrash_file: str, tmp_path: Path
) -> None:
    """With a 5 ms reader on memory.pressure: 'trigger.starved' is logged and the thrasher
    is still killed, within two 10 s checks."""
    config = write_config(
        tmp_path / "p.toml",
        scope_config(scratch.path, scratch.memcg_path).replace(
            'cgroup = "', 'starvation_check_s = 10\ncgroup = "', 1
        ),
    )
    reader = subprocess.Popen([sys.executable, "-c", READER, str(scratch.group.pressure_path())])
    try:
        with Daemon(config) as daemon:
            daemon.wait_for("controller.ready", 20)
            thrasher = scratch.spawn_workload("thrash", thrash_file)
            starved = daemon.wait_for("trigger.starved", 35)
            assert starved["scope"] == scratch.path
            assert starved["stall_ratio"] >= starved["trigger_ratio"]
            killed = daemon.wait_for("victim.killed", 15)
            assert killed["pid"] == thrasher.pid
            assert thrasher.wait(10) == -signal.SIGKILL
            daemon.stop()
    finally:
        reader.kill()
        reader.wait()
