"""The availability monitor's rules and its adaptive polling interval."""

from __future__ import annotations

from pressured.config import AvailabilitySettings
from pressured.kernel.cgroupfs import UNLIMITED
from pressured.monitors.availability import evaluate_cgroup, evaluate_system, next_interval_s
from pressured.snapshot import SystemMemory

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
