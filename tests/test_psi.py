"""PSI: trigger spec rules, window legalisation, and real triggers on this kernel.

The spec and ``legalize`` tests are pure. The rest arm real triggers: on /proc/pressure/memory
for the kernel's accept/refuse answers, and on a scratch cgroup's memory.pressure with a real
page-cache thrash for an actual trigger event (and its absence when idle).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import time
from collections.abc import Iterator

import pytest

from pressured.errors import ParseError, TriggerError, TriggerSpecError
from pressured.kernel import psi
from pressured.kernel.psi import Resource, TriggerSpec, legalize, open_trigger
from pressured.testing.scratch import ScratchGroup, drop_caches
from tests.conftest import requires_kernel

MEMORY = Resource.MEMORY
SYSTEM_MEMORY = "/proc/pressure/memory"
EVENT_TIMEOUT_S = 15.0
IDLE_WATCH_S = 3.0


def spec(threshold_us: int, window_us: int, kind: psi.Kind = "some") -> TriggerSpec:
    return TriggerSpec(MEMORY, kind, threshold_us, window_us)


def _psi_skip_reason() -> str | None:
    if not os.path.exists(SYSTEM_MEMORY):
        return "kernel has no PSI (/proc/pressure/memory missing)"
    if not os.access(SYSTEM_MEMORY, os.W_OK):
        return "cannot open /proc/pressure/memory for writing (needs root)"
    return None


requires_psi = pytest.mark.skipif(
    _psi_skip_reason() is not None, reason=f"real-kernel test: {_psi_skip_reason()}"
)


@contextlib.contextmanager
def armed(path: str | os.PathLike[str], trigger: TriggerSpec) -> Iterator[int]:
    """A trigger fd, closed (disarmed) on exit even when the test fails."""
    fd = open_trigger(path, trigger)
    try:
        yield fd
    finally:
        os.close(fd)


def wait_for_pri(fd: int, timeout_s: float) -> bool:
    """Poll a trigger fd for POLLPRI (the only bit that means "fired"); True if it fired."""
    poller = select.poll()
    poller.register(fd, select.POLLPRI)
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        for _fd, revents in poller.poll(remaining * 1000):
            if revents & select.POLLPRI:
                return True
            if revents & (select.POLLERR | select.POLLNVAL):
                raise AssertionError(f"trigger fd reported {revents:#x}")
    return False


# -- parse_pressure --------------------------------------------------------------------------


def test_parse_pressure_reads_some_and_full() -> None:
    """Both lines of a memory pressure file are parsed into figures."""
    text = (
        "some avg10=1.50 avg60=0.25 avg300=0.00 total=12345\n"
        "full avg10=0.50 avg60=0.00 avg300=0.00 total=678\n"
    )
    pressure = psi.parse_pressure(text)
    assert pressure.some.avg10 == 1.5
    assert pressure.some.total_us == 12345
    assert pressure.full is not None
    assert pressure.full.total_us == 678


def test_parse_pressure_without_full_line() -> None:
    """CPU pressure on older kernels has no 'full' line: full is None."""
    pressure = psi.parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert pressure.full is None
    assert pressure.line("full") is None


def test_parse_pressure_rejects_missing_field() -> None:
    """A line without 'total' is a ParseError naming the missing field."""
    with pytest.raises(ParseError, match="total"):
        psi.parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00\n")


@requires_psi
def test_read_pressure_on_the_real_file() -> None:
    """The real /proc/pressure/memory parses."""
    pressure = psi.read_pressure(SYSTEM_MEMORY)
    assert 0.0 <= pressure.some.avg10 <= 100.0


# -- TriggerSpec.validate ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold_us", "window_us"),
    [(1, 500_000), (150_000, 1_000_000), (500_000, 500_000), (10_000_000, 10_000_000)],
)
def test_privileged_legal_specs_validate(threshold_us: int, window_us: int) -> None:
    """Thresholds within windows of 500 ms .. 10 s are legal with CAP_SYS_RESOURCE."""
    spec(threshold_us, window_us).validate(privileged=True)


@pytest.mark.parametrize("window_us", [2_000_000, 4_000_000, 10_000_000])
def test_unprivileged_legal_specs_validate(window_us: int) -> None:
    """2 s multiples up to 10 s are legal without CAP_SYS_RESOURCE."""
    spec(100_000, window_us).validate(privileged=False)


def test_kind_must_be_some_or_full() -> None:
    """Any kind but some/full is refused, naming the kind."""
    bad = TriggerSpec(MEMORY, "most", 1, 1_000_000)  # type: ignore[arg-type]
    with pytest.raises(TriggerSpecError, match="kind must be 'some' or 'full'"):
        bad.validate()


@pytest.mark.parametrize("threshold_us", [0, -5])
def test_threshold_must_be_positive(threshold_us: int) -> None:
    """A zero or negative threshold is refused."""
    with pytest.raises(TriggerSpecError, match="threshold must be > 0"):
        spec(threshold_us, 1_000_000).validate()


@pytest.mark.parametrize("window_us", [499_999, 0, 10_000_001, 60_000_000])
def test_window_must_be_between_500ms_and_10s(window_us: int) -> None:
    """Windows outside 500 ms .. 10 s are refused, naming the bounds."""
    with pytest.raises(TriggerSpecError, match="window must be between 500000 and 10000000"):
        spec(1, window_us).validate()


def test_threshold_must_not_exceed_window() -> None:
    """A threshold larger than its window can never fire and is refused."""
    with pytest.raises(TriggerSpecError, match="must not exceed the window"):
        spec(2_000_001, 2_000_000).validate()


@pytest.mark.parametrize("window_us", [500_000, 1_000_000, 3_000_000, 9_000_000])
def test_unprivileged_window_must_be_multiple_of_2s(window_us: int) -> None:
    """Without CAP_SYS_RESOURCE a window that is not a 2 s multiple is refused."""
    with pytest.raises(TriggerSpecError, match="multiple of 2 s"):
        spec(100_000, window_us).validate(privileged=False)


def test_kernel_text_is_nul_terminated() -> None:
    """What is written to the kernel is 'kind threshold window' plus NUL."""
    assert spec(150_000, 2_000_000).kernel_text() == b"some 150000 2000000\0"


# -- legalize -----------------------------------------------------------------------------------


def test_legalize_rounds_1s_up_to_2s_and_scales_threshold() -> None:
    """Unprivileged, 150 ms/1 s becomes 300 ms/2 s: same 15 % stall ratio, with a reason."""
    effective, adjustment = legalize(spec(150_000, 1_000_000), privileged=False)
    assert (effective.threshold_us, effective.window_us) == (300_000, 2_000_000)
    assert effective.stall_ratio == pytest.approx(0.15)
    assert adjustment is not None
    assert "CAP_SYS_RESOURCE" in adjustment.reason


def test_legalize_caps_window_at_10s() -> None:
    """Unprivileged, a 9.5 s window becomes 10 s, never more."""
    effective, _ = legalize(spec(950_000, 9_500_000), privileged=False)
    assert effective.window_us == 10_000_000
    assert effective.threshold_us == 1_000_000


def test_legalize_keeps_legal_unprivileged_spec() -> None:
    """An already-legal 2 s multiple is returned unchanged, with no adjustment."""
    original = spec(150_000, 4_000_000)
    assert legalize(original, privileged=False) == (original, None)


def test_legalize_keeps_privileged_spec() -> None:
    """With CAP_SYS_RESOURCE a 1 s window is legal and left alone."""
    original = spec(150_000, 1_000_000)
    assert legalize(original, privileged=True) == (original, None)


def test_legalize_does_not_hide_config_mistakes() -> None:
    """A threshold above the window is an error, not something to adjust."""
    with pytest.raises(TriggerSpecError, match="must not exceed"):
        legalize(spec(3_000_000, 1_000_000), privileged=False)


# -- real triggers on /proc/pressure/memory -------------------------------------------------------


@requires_psi
def test_open_trigger_2s_window_works() -> None:
    """'some 150000 2000000' is accepted by the kernel with or without privilege."""
    with armed(SYSTEM_MEMORY, spec(150_000, 2_000_000)) as fd:
        assert fd >= 0


@requires_psi
def test_open_trigger_1s_window_refused_without_cap_sys_resource() -> None:
    """Without CAP_SYS_RESOURCE the kernel refuses a 1 s window with EINVAL, and says why."""
    if psi.may_use_fast_windows():
        pytest.skip("this process has CAP_SYS_RESOURCE, so the kernel accepts 1 s windows")
    with pytest.raises(TriggerError, match="multiple of 2 s") as caught:
        open_trigger(SYSTEM_MEMORY, spec(150_000, 1_000_000))
    assert caught.value.errno == errno.EINVAL


@requires_psi
def test_second_trigger_on_same_fd_is_ebusy() -> None:
    """One trigger per fd: a second write on the same fd fails with EBUSY."""
    trigger = spec(150_000, 2_000_000)
    with armed(SYSTEM_MEMORY, trigger) as fd, pytest.raises(OSError) as caught:
        os.write(fd, trigger.kernel_text())
    assert caught.value.errno == errno.EBUSY


@requires_psi
def test_open_trigger_on_missing_file_is_trigger_error() -> None:
    """A pressure file that does not exist is a TriggerError carrying ENOENT."""
    with pytest.raises(TriggerError) as caught:
        open_trigger("/proc/pressure/no-such-resource", spec(150_000, 2_000_000))
    assert caught.value.errno == errno.ENOENT


# -- real trigger events on a scratch cgroup -------------------------------------------------------


@requires_kernel
@pytest.mark.pressure
def test_trigger_fires_under_page_cache_thrash(thrash_file: str) -> None:
    """A thrash workload in a 32 MiB group makes 'some 50ms/2s' fire (POLLPRI) within 15 s."""
    with (
        ScratchGroup(32 << 20) as group,
        armed(group.group.pressure_path(), spec(50_000, 2_000_000)) as fd,
    ):
        drop_caches()
        group.spawn_workload("thrash", thrash_file)
        assert wait_for_pri(fd, EVENT_TIMEOUT_S), "no trigger event within 15 s"


@requires_kernel
def test_idle_group_trigger_stays_silent() -> None:
    """With nothing running in the group, no POLLPRI arrives within 3 s (idle = no events)."""
    with (
        ScratchGroup(32 << 20) as group,
        armed(group.group.pressure_path(), spec(50_000, 2_000_000)) as fd,
    ):
        assert not wait_for_pri(fd, IDLE_WATCH_S)
