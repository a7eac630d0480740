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

A raised stop can also be lost. CPython runs a signal's Python handler at the next check of
its evaluation loop in the main thread, which may be inside a weakref callback or a
``__del__`` (importlib drops a module lock through one after every import); what the handler
raises there is printed as "Exception ignored in ..." and discarded, and start-up carries on as
if no signal had come (about 1 SIGTERM in 100 landing during a run of imports, measured here).
So every signal the handlers raise for is also written down: a raise that was caught ends the
command, hence one still written down later was lost. :func:`raise_missed` raises it again at
a checkpoint, and :func:`take_missed` hands it to the controller's own handlers once they are
installed, so a lost SIGTERM still stops the daemon. While the handlers are installed, such a
lost exception is not printed either (its "Exception ignored" traceback would only alarm).
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


_raised: list[signal.Signals] = []
"""Every stop signal the handlers raised for, oldest first (see the module's docstring)."""


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    _raised.append(signal.SIGINT)
    raise KeyboardInterrupt


def _stop(_signum: int, _frame: FrameType | None) -> None:
    _raised.append(signal.SIGTERM)
    raise StopRequested


def _exception_for(sig: signal.Signals) -> KeyboardInterrupt:
    return StopRequested() if sig == signal.SIGTERM else KeyboardInterrupt()


def take_missed() -> list[signal.Signals]:
    """The stop signals raised for but lost on their way (swallowed where Python ignores
    exceptions), oldest first; forgotten here, the caller acts on them.

    Meaningful from code that runs only while no raised stop was caught: a caught one ends the
    command (``pressured.cli.main`` forgets them all when it returns)."""
    missed = list(_raised)
    _raised.clear()
    return missed


def raise_missed() -> None:
    """A checkpoint in start-up: raise again a stop signal whose first raise was lost."""
    missed = take_missed()
    if missed:
        raise _exception_for(missed[0])


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """Python's hook for exceptions it must drop: our own lost stop stays quiet (it is written
    down, and acted on later); anything else goes to the hook we replaced."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _raised:
        return
    _hook_before(unraisable)


_hook_before = sys.unraisablehook


def install() -> dict[signal.Signals, Handler]:
    """Make SIGINT and SIGTERM raise from now on; return the handlers they replace (empty
    outside the main thread, where Python cannot set handlers)."""
    global _hook_before
    if threading.current_thread() is not threading.main_thread():
        return {}
    _hook_before, sys.unraisablehook = sys.unraisablehook, _unraisable
    return {
        signal.SIGINT: signal.signal(signal.SIGINT, _interrupt),
        signal.SIGTERM: signal.signal(signal.SIGTERM, _stop),
    }


def restore(previous: dict[signal.Signals, Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    if previous and sys.unraisablehook is _unraisable:
        sys.unraisablehook = _hook_before
    _raised.clear()


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
