"""Hand-made process records for guard and actuator tests (no root needed)."""

from __future__ import annotations

from pressured.events import EventSource, PressureEvent
from pressured.kernel.procfs import ProcessRecord
from pressured.snapshot import Snapshot


def process(
    pid: int,
    *,
    comm: str = "worker",
    cmdline: str = "",
    uid: int = 1000,
    rss_mib: float = 10,
    oom_score: int = 700,
    adj: int = 0,
    cgroup: str | None = "/jobs",
    kernel_thread: bool = False,
    start_time: int = 1000,
) -> ProcessRecord:
    return ProcessRecord(
        pid=pid,
        ppid=1,
        start_time=start_time,
        comm=comm,
        cmdline=cmdline or comm,
        cmdline_truncated=False,
        uid=uid,
        state="S",
        rss_bytes=int(rss_mib * 2**20),
        swap_bytes=0,
        oom_score=oom_score,
        oom_score_adj=adj,
        cgroup=cgroup,
        is_kernel_thread=kernel_thread,
    )


def snapshot(*processes: ProcessRecord, self_pid: int = 999_999, scope: str = "/jobs") -> Snapshot:
    event = PressureEvent(scope=scope, level="some", source=EventSource.MANUAL)
    return Snapshot(scope=scope, event=event, processes=tuple(processes), self_pid=self_pid)
