"""No garbage collection while a decision runs.

CPython's cyclic collector runs when allocations pass a threshold, on whichever thread
allocates. A decision at 10,000 processes allocates tens of thousands of objects (the skim's
lines, family bounds, records), which set off about 55 young collections and, every two
events or so, a full one: measured at 30 to 66 ms each, in the middle of event -> SIGKILL
(`benchmarks/reaction.py`). So the collector is off from an event's arrival until its kill is
done, and back on (if it was on) when the last running decision ends; the garbage of the
decision is collected after the victim got its signal.

Process-wide, as the collector is: a library user's application pauses collection for the
same milliseconds. Nested and concurrent decisions (several scopes) share one count.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_running = 0
_was_enabled = False


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block; restore it when no block is left."""
    global _running, _was_enabled  # noqa: PLW0603 - one process-wide collector, one count
    with _lock:
        if _running == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _was_enabled:
                gc.enable()
