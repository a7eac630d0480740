"""pidfds and process_mrelease against a real child holding 256 MiB, plus the errno seam.

The real-kernel tests walk one victim through its life: alive (mrelease refuses: not dying),
killed through its pidfd (mrelease reaps it, or finds it already gone), exited and waited for
(gone). The seam tests cover the errnos the kernel will not produce on demand.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from pressured.doctor import kernel_version
from pressured.kernel import pidfd
from pressured.kernel.pidfd import MreleaseStatus
from pressured.testing.scratch import ScratchGroup
from tests.conftest import kernel_skip_reason

HOG_MIB = 256
GROUP_LIMIT = 512 << 20
EXIT_TIMEOUT_S = 10.0


def _mrelease_skip_reason() -> str | None:
    reason = kernel_skip_reason()
    if reason:
        return reason
    version = kernel_version()
    if version is not None and version < (5, 15):
        return "process_mrelease needs Linux 5.15+"
    return None


requires_mrelease = pytest.mark.skipif(
    _mrelease_skip_reason() is not None, reason=f"real-kernel test: {_mrelease_skip_reason()}"
)


@pytest.fixture
def hog() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A child holding 256 MiB in a 512 MiB scratch group, and a pidfd on it."""
    with ScratchGroup(GROUP_LIMIT) as group:
        proc = group.spawn_workload("hog", str(HOG_MIB))
        fd = pidfd.open_pidfd(proc.pid)
        try:
            yield proc, fd
        finally:
            pidfd.close_quietly(fd)


@requires_mrelease
def test_mrelease_supported() -> None:
    """The probe sees the syscall on this kernel."""
    assert pidfd.mrelease_supported()


@requires_mrelease
def test_mrelease_before_kill_is_not_dying(hog: tuple[subprocess.Popen[bytes], int]) -> None:
    """A live, unkilled process cannot be reaped: EINVAL, NOT_DYING, and it keeps running."""
    proc, fd = hog
    result = pidfd.process_mrelease(fd)
    assert result.status is MreleaseStatus.NOT_DYING
    assert result.errno == errno.EINVAL
    assert proc.poll() is None


@requires_mrelease
def test_kill_via_pidfd_then_mrelease_reaps(hog: tuple[subprocess.Popen[bytes], int]) -> None:
    """SIGKILL through the pidfd then mrelease at once: REAPED, or GONE if it beat us to it."""
    proc, fd = hog
    pidfd.send_signal(fd, signal.SIGKILL)
    result = pidfd.process_mrelease(fd)
    assert result.status in (MreleaseStatus.REAPED, MreleaseStatus.GONE), result
    assert pidfd.wait_exited(fd, EXIT_TIMEOUT_S)
    assert proc.wait(EXIT_TIMEOUT_S) == -signal.SIGKILL


@requires_mrelease
def test_mrelease_after_exit_and_wait_is_gone(hog: tuple[subprocess.Popen[bytes], int]) -> None:
    """Once the killed child has exited and been waited for, mrelease answers ESRCH: GONE."""
    proc, fd = hog
    pidfd.send_signal(fd, signal.SIGKILL)
    proc.wait(EXIT_TIMEOUT_S)
    result = pidfd.process_mrelease(fd)
    assert result.status is MreleaseStatus.GONE
    assert result.errno == errno.ESRCH


@requires_mrelease
def test_send_signal_after_reap_raises_process_lookup(
    hog: tuple[subprocess.Popen[bytes], int],
) -> None:
    """A pidfd whose process is gone refuses signals (no PID-reuse race possible)."""
    proc, fd = hog
    pidfd.send_signal(fd, signal.SIGKILL)
    proc.wait(EXIT_TIMEOUT_S)
    with pytest.raises(ProcessLookupError):
        pidfd.send_signal(fd, signal.SIGKILL)


@requires_mrelease
def test_pidfd_is_readable_only_after_exit(hog: tuple[subprocess.Popen[bytes], int]) -> None:
    """has_exited is False while the child lives and True once it was killed."""
    _proc, fd = hog
    assert not pidfd.has_exited(fd)
    pidfd.send_signal(fd, signal.SIGKILL)
    assert pidfd.wait_exited(fd, EXIT_TIMEOUT_S)
    assert pidfd.has_exited(fd)


def test_open_pidfd_of_reaped_process_raises() -> None:
    """Opening a pidfd on a PID that has been waited for raises ProcessLookupError."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    with pytest.raises(ProcessLookupError):
        pidfd.open_pidfd(proc.pid)


def test_mrelease_on_non_pidfd_is_bad_fd() -> None:
    """An fd that is not a pidfd answers EBADF (or ENOSYS where the syscall is missing)."""
    read_end, write_end = os.pipe()
    try:
        result = pidfd.process_mrelease(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result.status in (MreleaseStatus.BAD_FD, MreleaseStatus.UNSUPPORTED)


@pytest.mark.parametrize(
    ("err", "status"),
    [
        (errno.EAGAIN, MreleaseStatus.PARTIAL),
        (errno.EINTR, MreleaseStatus.INTERRUPTED),
        (errno.ENOSYS, MreleaseStatus.UNSUPPORTED),
        (errno.EPERM, MreleaseStatus.ERROR),
    ],
)
def test_seam_maps_errno_to_status(err: int, status: MreleaseStatus) -> None:
    """Through set_mrelease_call, each errno the kernel may answer maps to its status."""
    previous = pidfd.set_mrelease_call(lambda _fd, _flags: err)
    try:
        result = pidfd.process_mrelease(123)
    finally:
        pidfd.set_mrelease_call(previous)
    assert result.status is status
    assert result.errno == err
    assert not result.ok


def test_seam_enosys_makes_mrelease_unsupported() -> None:
    """mrelease_supported is False when the (faked) kernel answers ENOSYS."""
    previous = pidfd.set_mrelease_call(lambda _fd, _flags: errno.ENOSYS)
    try:
        assert not pidfd.mrelease_supported()
    finally:
        pidfd.set_mrelease_call(previous)


def test_seam_restore_with_none_gives_real_call() -> None:
    """set_mrelease_call(None) restores the real syscall, whatever was installed."""
    previous = pidfd.set_mrelease_call(lambda _fd, _flags: errno.EAGAIN)
    try:
        pidfd.set_mrelease_call(None)
        assert pidfd.process_mrelease(-1).status in (
            MreleaseStatus.BAD_FD,
            MreleaseStatus.UNSUPPORTED,
        )
    finally:
        pidfd.set_mrelease_call(previous)
