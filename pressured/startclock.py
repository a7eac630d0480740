"""How long ago this process was exec'd: the start-up figure a restarted daemon reports.

The kernel records a process's start time in ``/proc/self/stat`` (field 22, clock ticks since
boot, the same clock as ``CLOCK_BOOTTIME``), so the figure includes the interpreter's own
start and every import, which no timestamp taken in Python can see. Resolution is one clock
tick (10 ms on common kernels).
"""

from __future__ import annotations

import os
import time

__all__ = ["seconds_since_exec"]

_STARTTIME_FIELD = 22


def seconds_since_exec(proc_root: str = "/proc") -> float | None:
    """Seconds between this process's start and now; None if procfs cannot say."""
    try:
        with open(f"{proc_root}/self/stat", "rb") as handle:
            stat = handle.read()
        # Fields after the command name (which may hold spaces and parentheses) start at
        # field 3; starttime is field 22.
        fields = stat[stat.rindex(b")") + 2 :].split()
        ticks = int(fields[_STARTTIME_FIELD - 3])
        hertz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / hertz)
