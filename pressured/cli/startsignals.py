"""Stop signals while ``pressured run`` starts: before the controller's loop installs its own
handlers, SIGINT and SIGTERM raise in the main thread, so start-up unwinds (each step undoes
what it set up) and the command exits with a status that says what happened.

Left at its default disposition, a SIGTERM during start-up (a ``systemctl stop`` or a pod
deletion while the daemon imports, reads its configuration or arms) killed the process on the
spot: no log line said why it stopped, and its status (killed by SIGTERM) differed from the
0 of the same signal a moment later. Both signals raise a ``KeyboardInterrupt`` because asyncio
and task groups let exactly that through at once, as they must for Ctrl-C; SIGTERM raises the
subclass :class:`StopRequested`, so the command can tell a requested stop (exit 0, as once
running) from an interruption (130).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
EXIT_STOPPED = 0  # a requested stop that unwound cleanly, as SIGTERM once the daemon runs

Handler = Callable[[int, FrameType | None], Any] | int | None


class StopRequested(KeyboardInterrupt):
    """SIGTERM before the controller's own handler took over: a requested stop."""


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise StopRequested


def install() -> dict[signal.Signals, Handler]:
    """Make SIGINT and SIGTERM raise from now on; return the handlers they replace (empty
    outside the main thread, where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {
        signal.SIGINT: signal.signal(signal.SIGINT, _interrupt),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _stop),
    }


def restore(previous: dict[signal.Signals, Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def interruption(exc: BaseException) -> KeyboardInterrupt | None:
    """The stop signal behind ``exc``: itself, or one that another exception was raised
    *from*. A signal can land while CPython runs ``__set_name__`` for a class being created
    (every dataclass field at import time), and Python 3.11 re-raises whatever that raises as
    ``RuntimeError`` from it: a SIGTERM during the daemon's imports then ended in a traceback
    and exit 1 (about 1 run in 150 with SIGTERM 20 ms after ``daemon.starting``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def signal_name(interrupt: KeyboardInterrupt) -> str:
    return "SIGTERM" if isinstance(interrupt, StopRequested) else "SIGINT"


def exit_status(interrupt: KeyboardInterrupt) -> int:
    """0 for a SIGTERM (a requested stop), 130 for Ctrl-C."""
    return EXIT_STOPPED if isinstance(interrupt, StopRequested) else EXIT_INTERRUPTED
