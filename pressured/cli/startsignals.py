"""Signals while ``pressured run`` starts: before the controller's loop installs its own
handlers, SIGINT and SIGTERM raise in the main thread, so start-up unwinds (each step undoes
what it set up) and the command exits with a status that says what happened; SIGHUP is kept
for the controller, which reloads once running (its default action killed the process).

Left at its default disposition, a SIGTERM during start-up (a ``systemctl stop`` or a pod
deletion while the daemon imports, reads its configuration or arms) killed the process on the
spot: no log line said why it stopped, and its status (killed by SIGTERM) differed from the
0 of the same signal a moment later. Both signals raise a ``KeyboardInterrupt`` because asyncio
and task groups let exactly that through at once, as they must for Ctrl-C; SIGTERM raises the
subclass :class:`StopRequested`, so the command can tell a requested stop (exit 0, as once
running) from an interruption (130).

A raised stop can also be lost. CPython runs a signal's Python handler at the next check of
its evaluation loop in the main thread, which may be inside a weakref callback or a
``__del__`` (importlib drops a module lock through one after every import); what the handler
raises there is printed as "Exception ignored in ..." and discarded, and start-up carries on as
if no signal had come (about 1 SIGTERM in 100 landing during a run of imports, measured here).
So every signal the handlers receive is also written down: a raise that was caught ends the
command, hence a stop still written down later was lost. :func:`raise_missed` raises it again
at a checkpoint, and :func:`take_pending` hands what is written down to the controller's own
handlers once they are installed, so a lost SIGTERM still stops the daemon. While the
handlers are installed, such a lost exception is not printed either (its "Exception ignored"
traceback would only alarm).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C
EXIT_STOPPED = 0  # a requested stop that unwound cleanly, as SIGTERM once the daemon runs

Handler = Callable[[int, FrameType | None], Any] | int | None


class StopRequested(KeyboardInterrupt):
    """SIGTERM before the controller's own handler took over: a requested stop."""


_received: list[signal.Signals] = []
"""Every signal the handlers received, oldest first (see the module's docstring)."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    _received.append(signal.SIGINT)
    raise KeyboardInterrupt


def _stop(_signum: int, _frame: FrameType | None) -> None:
    _received.append(signal.SIGTERM)
    raise StopRequested


def _hang_up(_signum: int, _frame: FrameType | None) -> None:
    # Written down only: start-up reads the configuration anyway, and the controller reloads
    # once running, in case the file changed after start-up read it.
    _received.append(signal.SIGHUP)


def take_pending() -> list[signal.Signals]:
    """The signals still to act on, oldest first, forgotten here: stops raised for but lost on
    their way (swallowed where Python ignores exceptions) and SIGHUPs.

    Meaningful from code that runs only while no raised stop was caught: a caught one ends the
    command (``pressured.cli.main`` forgets them all when it returns)."""
    pending = list(_received)
    _received.clear()
    return pending


def raise_missed() -> None:
    """A checkpoint in start-up: raise again a stop signal whose first raise was lost."""
    stops = [sig for sig in _received if sig in STOP_SIGNALS]
    if stops:
        take_pending()
        raise StopRequested() if stops[0] == signal.SIGTERM else KeyboardInterrupt()


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """Python's hook for exceptions it must drop: our own lost stop stays quiet (it is written
    down, and acted on later); anything else goes to the hook we replaced."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _received:
        return
    _hook_before(unraisable)


_hook_before = sys.unraisablehook


def install() -> dict[signal.Signals, Handler]:
    """Make SIGINT and SIGTERM raise and SIGHUP wait from now on; return the handlers they
    replace (empty outside the main thread, where Python cannot set handlers)."""
    global _hook_before
    if threading.current_thread() is not threading.main_thread():
        return {}
    _hook_before, sys.unraisablehook = sys.unraisablehook, _unraisable
    return {
        signal.SIGINT: signal.signal(signal.SIGINT, _interrupt),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _stop),
        signal.SIGHUP: signal.signal(signal.SIGHUP, _hang_up),
    }


def restore(previous: dict[signal.Signals, Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if previous and sys.unraisablehook is _unraisable:
        sys.unraisablehook = _hook_before
    _received.clear()


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
