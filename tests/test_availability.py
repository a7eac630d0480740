"""The availability monitor's rules and its adaptive polling interval."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pressured.config import AvailabilitySettings
from pressured.errors import KernelError
from pressured.kernel import cgroupfs
from pressured.kernel.cgroupfs import UNLIMITED, Cgroup
from pressured.monitors.availability import evaluate_cgroup, evaluate_system, next_interval_s
from pressured.snapshot import SystemMemory
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import scratch_unavailable_reason

GIB = 2**30
SETTINGS = AvailabilitySettings(
    enabled=True,
    mem_available_percent=10,
    swap_free_percent=10,
    usage_percent=90,
    min_interval_ms=100,
    max_interval_ms=1000,
)


def memory(avail_gib: float, swap_total_gib: float = 0, swap_free_gib: float = 0) -> SystemMemory:
    return SystemMemory(
        16 * GIB, int(avail_gib * GIB), int(swap_total_gib * GIB), int(swap_free_gib * GIB)
    )


def test_system_acts_only_when_memory_and_swap_are_both_low() -> None:
    """earlyoom's rule: MemAvailable low and SwapFree low; no swap counts as exhausted."""
    assert evaluate_system(memory(1), SETTINGS).low
    assert not evaluate_system(memory(1, swap_total_gib=8, swap_free_gib=4), SETTINGS).low
    assert evaluate_system(memory(1, swap_total_gib=8, swap_free_gib=0.5), SETTINGS).low
    assert not evaluate_system(memory(4), SETTINGS).low


def test_cgroup_usage_against_limit() -> None:
    """A cgroup is low at usage_percent of its limit; an unlimited group never is."""
    assert evaluate_cgroup(95, 100, SETTINGS).low
    assert not evaluate_cgroup(50, 100, SETTINGS).low
    assert not evaluate_cgroup(10 * GIB, UNLIMITED, SETTINGS).low


def test_interval_is_short_near_the_threshold_and_long_far_away() -> None:
    """The poll interval scales from min at the threshold to max 20 points away."""
    assert next_interval_s(0.0, SETTINGS) == 0.1
    assert next_interval_s(0.5, SETTINGS) == 1.0
    assert 0.1 < next_interval_s(0.1, SETTINGS) < 1.0


@pytest.fixture
def unaccounted_group() -> Iterator[str]:
    """A bare cgroup v2 group that no memory accounting reaches (hybrid hosts: no v1 memcg
    of the same path); removed after the test."""
    reason = scratch_unavailable_reason()
    if reason:
        pytest.skip(f"real-kernel test: {reason}")
    layout = cgroupfs.discover_layout()
    group = Cgroup(layout, f"/pressured-test-noacct-{uuid.uuid4().hex[:10]}").create()
    try:
        try:
            group.memory()
        except KernelError:
            yield group.path
            return
        pytest.skip("every group has memory accounting here (memory controller on cgroup v2)")
    finally:
        group.directory.rmdir()


@pytest.mark.kernel
def test_availability_on_a_group_without_memory_accounting_is_disabled_and_reload_survives(
    unaccounted_group: str, tmp_path: Path
) -> None:
    """The monitor says why it stops (availability.disabled) instead of dying silently, and
    the SIGHUP reload afterwards neither crashes nor stops the daemon."""
    config = write_config(
        tmp_path / "p.toml",
        scope_config(unaccounted_group, None) + "[scopes.availability]\nenabled = true\n",
    )
    with Daemon(config) as daemon:
        daemon.wait_for("controller.ready", 20)
        disabled = daemon.wait_for("availability.disabled", 10)
        assert disabled["scope"] == unaccounted_group
        for _ in range(2):
            mark = daemon.mark()
            daemon.signal(signal.SIGHUP)
            daemon.wait_for("config.reloaded", 10, after=mark)
            daemon.wait_for("availability.disabled", 10, after=mark)
        assert daemon.proc is not None and daemon.proc.poll() is None
        assert daemon.stop() == 0
    assert not daemon.events("task.crashed")
    assert not daemon.events("controller.crashed")
