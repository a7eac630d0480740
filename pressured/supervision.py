"""Supervision: a long-lived task that dies is logged and started again, after a delay.

Every background task of the controller (a scope's event loop, its availability monitor and
starvation check, the signal receiver) runs under :func:`supervise`. An exception ends only
that one run: it is logged with its traceback (``task.crashed``), counted, and the task is
started again after a delay that doubles from ``first_s`` up to ``max_s``, so a task that
fails at once every time costs one wake-up per ``max_s``, never a spin. A run that lasted
``healthy_after_s`` resets the delay: a crash an hour after the last one is not a crash loop.

Cancellation is not a failure: it ends the supervisor too (that is how the controller stops
and reloads). A task that *returns* is done on purpose (e.g. a monitor that found nothing to
watch and said so) and is not restarted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

__all__ = ["Backoff", "TaskRecord", "supervise"]

log = structlog.get_logger("pressured.supervision")


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float = 0.5
    max_s: float = 30.0
    healthy_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.first_s <= 0 or self.max_s < self.first_s:
            raise ValueError("backoff needs 0 < first_s <= max_s: a zero delay could spin")


@dataclass
class TaskRecord:
    """What the supervisor knows about one task, for ``status`` and tests."""

    name: str
    starts: int = 0
    crashes: int = 0
    last_error: str | None = None
    restart_at: float | None = None
    """Monotonic time of the next start while waiting out a delay, else None."""
    finished: bool = False


async def supervise(
    name: str,
    start: Callable[[], Awaitable[None]],
    *,
    backoff: Backoff | None = None,
    record: TaskRecord | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``start()`` until cancelled, starting it again after every failure."""
    backoff = backoff or Backoff()
    record = record or TaskRecord(name)
    delay = backoff.first_s
    while True:
        began = clock()
        record.starts += 1
        try:
            await start()
        except asyncio.CancelledError:
            # Our own cancellation (stop, reload) ends supervision; a CancelledError the task
            # raised by itself while nobody cancelled us is just another failure.
            current = asyncio.current_task()
            if current is None or current.cancelling():
                raise
            error: BaseException = RuntimeError("the task cancelled itself")
        except Exception as exc:
            error = exc
        else:
            record.finished = True
            log.info("task.finished", task=name)
            return
        if clock() - began >= backoff.healthy_after_s:
            delay = backoff.first_s
        record.crashes += 1
        record.last_error = repr(error)
        record.restart_at = clock() + delay
        log.error(
            "task.crashed",
            task=name,
            error=repr(error),
            crashes=record.crashes,
            restart_in_s=delay,
            exc_info=error,
        )
        await asyncio.sleep(delay)
        record.restart_at = None
        delay = min(backoff.max_s, delay * 2)
        log.warning("task.restarted", task=name, starts=record.starts + 1)
