"""pidfds and ``process_mrelease(2)``.

A pidfd pins a process's identity: once it is open, no PID reuse can redirect a signal sent
through it. ``process_mrelease`` frees the address space of a process that has been sent
SIGKILL, in the caller's context, so the memory comes back at the caller's speed instead of
whenever the dying process gets CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_mod
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

# process_mrelease has the same number on every architecture except alpha (558).
SYS_PROCESS_MRELEASE = 448

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _raw_process_mrelease(pidfd: int, flags: int) -> int:
    """Call the syscall; return 0 or the errno it failed with."""
    ctypes.set_errno(0)
    result = _libc.syscall(
        ctypes.c_long(SYS_PROCESS_MRELEASE), ctypes.c_int(pidfd), ctypes.c_uint(flags)
    )
    return 0 if result == 0 else ctypes.get_errno()


MreleaseCall = Callable[[int, int], int]
"""Signature of the raw call: ``(pidfd, flags) -> 0 or errno``. Replaceable for fault tests."""

_mrelease_call: MreleaseCall = _raw_process_mrelease


def set_mrelease_call(call: MreleaseCall | None) -> MreleaseCall:
    """Replace the raw syscall (``None`` restores the real one); return the previous one.

    This is the seam for faults the real kernel will not produce on demand (EAGAIN, EINTR,
    ENOSYS). Production code never calls it; :mod:`pressured.testing` does.
    """
    global _mrelease_call  # noqa: PLW0603 - one process-wide seam, documented above
    previous = _mrelease_call
    _mrelease_call = call or _raw_process_mrelease
    return previous


class MreleaseStatus(StrEnum):
    REAPED = "reaped"
    """The address space was released by us."""
    GONE = "gone"
    """ESRCH: the process has exited, or already detached its mm on its way out (it frees its
    own memory at its own pace from here on)."""
    NOT_DYING = "not_dying"
    """EINVAL: the process was not killed (or shares its mm with a live process)."""
    PARTIAL = "partial"
    """EAGAIN: part of the address space could not be released; retrying is reasonable."""
    INTERRUPTED = "interrupted"
    """EINTR: a signal interrupted the call."""
    UNSUPPORTED = "unsupported"
    """ENOSYS: the kernel is older than 5.15 or built without it."""
    BAD_FD = "bad_fd"
    """EBADF: not a pidfd."""
    ERROR = "error"
    """Any other errno."""


_STATUS_BY_ERRNO = {
    0: MreleaseStatus.REAPED,
    errno_mod.ESRCH: MreleaseStatus.GONE,
    errno_mod.EINVAL: MreleaseStatus.NOT_DYING,
    errno_mod.EAGAIN: MreleaseStatus.PARTIAL,
    errno_mod.EINTR: MreleaseStatus.INTERRUPTED,
    errno_mod.ENOSYS: MreleaseStatus.UNSUPPORTED,
    errno_mod.EBADF: MreleaseStatus.BAD_FD,
}


@dataclass(frozen=True, slots=True)
class MreleaseResult:
    status: MreleaseStatus
    errno: int
    duration_ns: int
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status is MreleaseStatus.REAPED


def process_mrelease(pidfd: int, flags: int = 0) -> MreleaseResult:
    """Release the memory of the dying process behind ``pidfd``; never raises for errno."""
    started = time.perf_counter_ns()
    err = _mrelease_call(pidfd, flags)
    elapsed = time.perf_counter_ns() - started
    return MreleaseResult(_STATUS_BY_ERRNO.get(err, MreleaseStatus.ERROR), err, elapsed)


def mrelease_supported() -> bool:
    """Cheap probe: an invalid fd answers EBADF where the syscall exists, ENOSYS where not."""
    return process_mrelease(-1).status is not MreleaseStatus.UNSUPPORTED


def open_pidfd(pid: int) -> int:
    """Open a pidfd (close-on-exec). Raises ProcessLookupError if the process is gone."""
    return os.pidfd_open(pid)


def send_signal(pidfd: int, sig: int = signal.SIGKILL) -> None:
    """Signal the process behind ``pidfd``. Raises ProcessLookupError if it has exited."""
    signal.pidfd_send_signal(pidfd, sig)


def has_exited(pidfd: int) -> bool:
    """A pidfd polls readable once its process has exited (zombie or reaped)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def wait_exited(pidfd: int, timeout_s: float) -> bool:
    """Block up to ``timeout_s`` for the process behind ``pidfd`` to exit; True if it did."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout_s * 1000))))


def close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
