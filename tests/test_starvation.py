"""A frequent reader of the watched pressure file silences unprivileged triggers; the daemon
notices the stall growing without events, says so, and acts anyway."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pressured.events import EventSource, PressureEvent
from pressured.kernel.caps import CAP_SYS_RESOURCE, has_capability
from pressured.kernel.psi import Pressure, PressureLine, Resource, TriggerSpec
from pressured.monitors.psi import ArmedTrigger
from pressured.starvation import StarvationCheck
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup

needs_unprivileged_triggers = pytest.mark.skipif(
    has_capability(CAP_SYS_RESOURCE),
    reason="privileged triggers use the kernel's RT poller, which readers cannot starve",
)

READER = """
import sys, time
path = sys.argv[1]
while True:
    with open(path) as handle:
        handle.read()
    time.sleep(0.005)
"""


@pytest.mark.kernel
@pytest.mark.pressure
@needs_unprivileged_triggers
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


def _pressure(some_total_us: int) -> Pressure:
    return Pressure(PressureLine(0.0, 0.0, 0.0, some_total_us), None)


def _check(events: list[PressureEvent]) -> StarvationCheck:
    spec = TriggerSpec(Resource.MEMORY, "some", 150_000, 2_000_000)
    armed = ArmedTrigger("some", "/x/memory.pressure", spec, spec, None)
    return StarvationCheck(
        scope="/x",
        interval_s=10.0,
        read_pressure=lambda: None,
        armed=lambda: (armed,),
        fired=lambda: 0,
        on_starved=events.append,
    )


def test_stall_past_the_trigger_ratio_without_events_is_starvation() -> None:
    """10 s of readings with 2 s stalled (ratio 0.2 >= 0.075): a starvation event."""
    event = _check([]).starved(_pressure(1_000_000), _pressure(3_000_000))
    assert event is not None
    assert event.source is EventSource.STARVATION
    assert event.detail["stall_ratio"] == pytest.approx(0.2)


def test_stall_below_the_trigger_ratio_is_not_starvation() -> None:
    """0.5 s stalled in 10 s (ratio 0.05 < 0.075): nothing to say."""
    assert _check([]).starved(_pressure(1_000_000), _pressure(1_500_000)) is None
