"""One-call process scan of ``/proc`` into immutable records.

Reading ``/proc/<pid>/*`` can block while the target is stuck in reclaim (its mmap lock), so
this module is meant to run on a worker thread, once per scan, never on the event loop.
Processes that vanish mid-scan are skipped silently; files that are present but malformed are
skipped and reported in :attr:`ScanResult.problems`, so the caller can log one line each.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pressured.errors import ParseError

PF_KTHREAD = 0x00200000
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_CMDLINE_LIMIT = 4096
_READ_CHUNK = 65536

# Field numbers of /proc/<pid>/stat (1-based, man 5 proc), as indexes into the words after the
# closing parenthesis of comm (which is field 2 and may itself contain spaces and parentheses).
_STAT_STATE = 3 - 3
_STAT_PPID = 4 - 3
_STAT_PGRP = 5 - 3
_STAT_SESSION = 6 - 3
_STAT_FLAGS = 9 - 3
_STAT_MINFLT = 10 - 3
_STAT_MAJFLT = 12 - 3
_STAT_STARTTIME = 22 - 3
_STAT_RSS = 24 - 3


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """What pressured knows about one process at scan time. Immutable, cheap to share."""

    pid: int
    ppid: int
    start_time: int
    """Clock ticks after boot (``/proc/<pid>/stat`` field 22): with ``pid`` it names a process
    across PID reuse."""
    comm: str
    cmdline: str
    """Arguments joined by spaces, cut at the scan's limit (see ``cmdline_truncated``)."""
    cmdline_truncated: bool
    uid: int
    state: str
    rss_bytes: int
    swap_bytes: int
    oom_score: int
    oom_score_adj: int
    cgroup: str | None
    """The cgroup v2 path (``/a/b``) or None where the process has no v2 membership line."""
    is_kernel_thread: bool
    pgid: int = 0
    """Process group (``stat`` field 5): with ``sid``, who belongs to one job."""
    sid: int = 0
    """Session (``stat`` field 6)."""
    minflt: int = 0
    """Cumulative minor faults (``stat`` field 10): first touches of new memory."""
    majflt: int = 0
    """Cumulative major faults (``stat`` field 12): refaults and swap-ins of its own."""
    exe_dev: int | None = None
    """Device of the executable (``stat`` of ``/proc/PID/exe``); None where not read. With
    ``exe_ino`` it names the binary in a way the process cannot forge, unlike comm/cmdline."""
    exe_ino: int | None = None
    cmdline_known: bool = True
    """False where the command line was not read in time (``/proc/PID/cmdline`` takes the
    target's mmap_lock and can block): ``cmdline`` is then empty, not the real one."""

    @property
    def identity(self) -> tuple[int, int]:
        return (self.pid, self.start_time)

    @property
    def memory_bytes(self) -> int:
        """Resident plus swapped: what killing it gives back at most."""
        return self.rss_bytes + self.swap_bytes

    @property
    def name(self) -> str:
        return self.comm


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """An earlier cheap reading of one process (keyed by its identity), for growth figures."""

    rss_bytes: int
    minflt: int
    majflt: int
    monotonic_ns: int


def counts_as_present(pid: int, state: str, kernel_thread: bool, self_pid: int) -> bool:
    """Whether a process counts when families are drawn (:data:`pressured.family.GroupOf`):
    not a zombie, a kernel thread, PID 1 or the daemon itself."""
    return state != "Z" and not kernel_thread and pid not in (1, self_pid)


@dataclass(frozen=True, slots=True)
class ScanProblem:
    pid: int
    problem: str


@dataclass(frozen=True, slots=True)
class ScanResult:
    processes: tuple[ProcessRecord, ...]
    problems: tuple[ScanProblem, ...]
    vanished: int
    """Processes that exited between listing and reading: normal, not a problem."""
    complete: bool
    """False when the deadline cut the scan short."""
    duration_ns: int
    skimmed: int = 0
    """Processes whose one cheap number was read (two-phase scans; 0 for a plain scan)."""
    previous: Mapping[tuple[int, int], ProcessSample] = field(default_factory=dict)
    """Earlier samples of the records, where the scan itself took them (a stat skim)."""
    sampled_ns: int | None = None
    """When the records' rss and fault counts were read, where the scan took them from one
    stat skim (the rates' "now"); None otherwise."""
    read_rates: Mapping[tuple[int, int], int] | None = None
    """Storage reads in bytes per second of the records, by identity, where the scan ran a
    read probe (:mod:`pressured.scan.reads`); None where it did not."""


def _read(path: str, limit: int = _READ_CHUNK) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _read_all(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class StatFields:
    comm: str
    state: str
    ppid: int
    flags: int
    start_time: int
    rss_pages: int
    pgid: int = 0
    sid: int = 0
    minflt: int = 0
    majflt: int = 0


def _printable(text: str) -> str:
    # A process names itself (prctl PR_SET_NAME): escape sequences or newlines in a comm must
    # never reach a terminal or a log line as such.
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def parse_stat(data: bytes, source: str = "<stat>") -> StatFields:
    """Parse ``/proc/<pid>/stat``. Raises :class:`ParseError` when it is malformed."""
    text = data.decode("utf-8", "replace")
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ParseError(source, "no '(comm)' field")
    words = text[close_paren + 1 :].split()
    if len(words) <= _STAT_RSS:
        raise ParseError(source, f"only {len(words) + 2} fields, need at least 24")
    try:
        return StatFields(
            comm=_printable(text[open_paren + 1 : close_paren]),
            state=words[_STAT_STATE],
            ppid=int(words[_STAT_PPID]),
            flags=int(words[_STAT_FLAGS]),
            start_time=int(words[_STAT_STARTTIME]),
            rss_pages=max(0, int(words[_STAT_RSS])),
            pgid=int(words[_STAT_PGRP]),
            sid=int(words[_STAT_SESSION]),
            minflt=int(words[_STAT_MINFLT]),
            majflt=int(words[_STAT_MAJFLT]),
        )
    except ValueError as exc:
        raise ParseError(source, f"non-numeric field: {exc}") from None


@dataclass(frozen=True, slots=True)
class StatusFields:
    uid: int
    swap_bytes: int


def _status_number(line: bytes, what: str, source: str) -> int:
    fields = line.split()
    # isdigit() on bytes is ASCII-only; int() still refuses absurdly long numbers (Python's
    # 4300-digit limit) with a bare ValueError, which must not escape a parser.
    if len(fields) < 2 or not fields[1].isdigit() or len(fields[1]) > 20:
        raise ParseError(source, f"malformed {what} line")
    return int(fields[1])


def parse_status(data: bytes, source: str = "<status>") -> StatusFields:
    """Take the real uid and VmSwap out of ``/proc/<pid>/status``."""
    uid: int | None = None
    swap_kib = 0
    for line in data.split(b"\n"):
        if line.startswith(b"Uid:"):
            uid = _status_number(line, "Uid", source)
        elif line.startswith(b"VmSwap:"):
            swap_kib = _status_number(line, "VmSwap", source)
    if uid is None:
        raise ParseError(source, "no Uid line")
    return StatusFields(uid=uid, swap_bytes=swap_kib * 1024)


def parse_cgroup_v2(data: bytes) -> str | None:
    """The v2 path from ``/proc/<pid>/cgroup`` (the ``0::`` line), or None."""
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def parse_cgroup_v1(data: bytes, controller: str) -> str | None:
    """The path of ``controller`` (for example ``memory``) in the v1 hierarchies, or None."""
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and controller in parts[1].split(","):
            return parts[2]
    return None


def format_cmdline(data: bytes, limit: int) -> tuple[str, bool]:
    """Arguments joined by spaces, control characters replaced, at most ``limit`` characters.

    ``data`` is what was read from ``/proc/<pid>/cmdline`` with a budget of ``limit + 2`` bytes:
    the kernel ends the last argument with a NUL, which is not part of the command line, so a
    command line of exactly ``limit`` bytes arrives as ``limit + 1`` and is *not* truncated.
    """
    body = data[:-1] if data.endswith(b"\0") else data
    truncated = len(body) > limit
    text = body[:limit].rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    cleaned = _printable(text)
    return cleaned, truncated


def cgroup_of(pid: int, proc_root: str = "/proc") -> str | None:
    """The cgroup v2 path of a process, or None (no v2 line, or the process is gone)."""
    try:
        return parse_cgroup_v2(_read(f"{proc_root}/{pid}/cgroup"))
    except OSError:
        return None


def _int_file(path: str, source: str) -> int:
    raw = _read(path, 64).strip()
    try:
        return int(raw)
    except ValueError:
        raise ParseError(source, f"not an integer: {raw[:20]!r}") from None


def read_process(
    pid: int,
    proc_root: str = "/proc",
    cmdline_limit: int = DEFAULT_CMDLINE_LIMIT,
    *,
    cgroup: str | None = None,
    with_cmdline: bool = True,
) -> ProcessRecord:
    """Read one process. Raises FileNotFoundError/ProcessLookupError if it is gone and
    :class:`ParseError` if a file is malformed.

    ``with_cmdline=False`` leaves the command line out (``cmdline_known`` False): it is the
    one file here that takes the target's mmap_lock, so a caller that must not block reads it
    elsewhere (:class:`pressured.scan.cmdline.CmdlineReader`). Every other file read here is
    generated without that lock."""
    base = f"{proc_root}/{pid}"
    stat = parse_stat(_read(f"{base}/stat", 4096), f"{base}/stat")
    kernel_thread = bool(stat.flags & PF_KTHREAD)
    if kernel_thread:
        # Kernel threads own no user memory and are never victims: skip the other reads.
        return ProcessRecord(
            pid=pid,
            ppid=stat.ppid,
            start_time=stat.start_time,
            comm=stat.comm,
            cmdline="",
            cmdline_truncated=False,
            uid=0,
            state=stat.state,
            rss_bytes=0,
            swap_bytes=0,
            oom_score=0,
            oom_score_adj=0,
            cgroup=None,
            is_kernel_thread=True,
            pgid=stat.pgid,
            sid=stat.sid,
        )
    status = parse_status(_read(f"{base}/status"), f"{base}/status")
    if with_cmdline:
        cmdline, truncated = read_cmdline(pid, proc_root, cmdline_limit)
    else:
        cmdline, truncated = "", False
    return ProcessRecord(
        pid=pid,
        ppid=stat.ppid,
        start_time=stat.start_time,
        comm=stat.comm,
        cmdline=cmdline,
        cmdline_truncated=truncated,
        uid=status.uid,
        state=stat.state,
        rss_bytes=stat.rss_pages * PAGE_SIZE,
        swap_bytes=status.swap_bytes,
        oom_score=_int_file(f"{base}/oom_score", f"{base}/oom_score"),
        oom_score_adj=_int_file(f"{base}/oom_score_adj", f"{base}/oom_score_adj"),
        cgroup=cgroup if cgroup is not None else parse_cgroup_v2(_read(f"{base}/cgroup")),
        is_kernel_thread=False,
        pgid=stat.pgid,
        sid=stat.sid,
        minflt=stat.minflt,
        majflt=stat.majflt,
        cmdline_known=with_cmdline,
    )


def read_cmdline(
    pid: int, proc_root: str = "/proc", limit: int = DEFAULT_CMDLINE_LIMIT
) -> tuple[str, bool]:
    """``/proc/PID/cmdline`` formatted (see :func:`format_cmdline`). Takes the target's
    mmap_lock in the kernel: may block for as long as that process is stuck in a fault."""
    return format_cmdline(_read(f"{proc_root}/{pid}/cmdline", limit + 2), limit)


SKIM_FILES = {
    "statm": "resident pages (x page size)",
    "oom_score": "the kernel's badness",
    "stat": "state, family, faults, start time and resident pages (a StatLine per process)",
}

StatLine = tuple[str, int, int, int, int, int, int, int, int]
"""What a ``stat`` skim keeps of ``/proc/PID/stat``, as a plain tuple (10,000 of them are made
per scan; the native skim builds the same): indexed by the ``LINE_*`` constants below."""
LINE_STATE: Final = 0
LINE_PPID: Final = 1
LINE_PGID: Final = 2
LINE_SID: Final = 3
LINE_FLAGS: Final = 4
LINE_MINFLT: Final = 5
LINE_MAJFLT: Final = 6
LINE_START: Final = 7
LINE_RSS_PAGES: Final = 8
STAT_READ_LIMIT = 2048
"""Bytes a stat skim reads: a stat line is at most about 1,100 (52 numbers, a 64-byte comm)."""


def parse_stat_line(data: bytes) -> StatLine:
    """The :data:`StatLine` of ``/proc/PID/stat`` (the reference for the native parser).
    Raises :class:`ParseError` when it is malformed."""
    close = data.rfind(b")")
    words = data[close + 1 :].split() if close >= 0 else []
    if len(words) <= _STAT_RSS:
        raise ParseError("stat", f"malformed: {data[:40]!r}")
    try:
        return (
            words[_STAT_STATE].decode("ascii", "replace")[:1],
            int(words[_STAT_PPID]),
            int(words[_STAT_PGRP]),
            int(words[_STAT_SESSION]),
            int(words[_STAT_FLAGS]),
            int(words[_STAT_MINFLT]),
            int(words[_STAT_MAJFLT]),
            int(words[_STAT_STARTTIME]),
            max(0, int(words[_STAT_RSS])),
        )
    except ValueError:
        raise ParseError("stat", f"non-numeric field: {data[:40]!r}") from None


def parse_skim(name: str, data: bytes) -> int:
    """The one number a skim takes from ``statm`` (resident bytes) or ``oom_score``."""
    words = data.split()
    try:
        if name == "statm":
            return int(words[1]) * PAGE_SIZE
        return int(words[0])
    except (IndexError, ValueError):
        raise ParseError(name, f"malformed: {data[:40]!r}") from None


@dataclass(frozen=True, slots=True)
class SkimResult:
    """One number per process from one lock-free file, read for every process in scope."""

    values: dict[int, int]
    problems: tuple[ScanProblem, ...]
    vanished: int
    complete: bool
    """False when the deadline cut the skim short (``values`` holds what was read)."""
    lines: dict[int, StatLine] = field(default_factory=dict)
    """A ``stat`` skim's whole :data:`StatLine` per process (``values`` holds resident bytes)."""
    taken_ns: int = 0
    """When the skim began (:func:`time.monotonic_ns`)."""


SKIM_MINIMUM = 64
"""Processes a skim reads even past its deadline: a late scan still gets something to rank."""


def skim_python(
    proc_root: str,
    pids: Iterable[int],
    name: str,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SkimResult:
    """Read ``/proc/PID/<name>`` (``statm``, ``oom_score`` or ``stat``) for each PID: one
    open, one read, one close each, the floor of any scan. None of them takes the mmap_lock.
    The ``deadline`` (on ``clock``) is checked every 64 processes, after the first 64."""
    if name not in SKIM_FILES:
        raise ValueError(f"cannot skim {name!r}: one of {sorted(SKIM_FILES)}")
    taken_ns = time.monotonic_ns()
    values: dict[int, int] = {}
    lines: dict[int, StatLine] = {}
    problems: list[ScanProblem] = []
    vanished = 0
    is_stat = name == "stat"
    limit = STAT_READ_LIMIT if is_stat else 128
    for index, pid in enumerate(pids):
        if deadline is not None and index and index % SKIM_MINIMUM == 0 and clock() > deadline:
            return SkimResult(values, tuple(problems), vanished, False, lines, taken_ns)
        try:
            fd = os.open(f"{proc_root}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.read(fd, limit)
            finally:
                os.close(fd)
            if is_stat:
                line = lines[pid] = parse_stat_line(data)
                values[pid] = line[LINE_RSS_PAGES] * PAGE_SIZE
            else:
                values[pid] = parse_skim(name, data)
        except (OSError, ParseError) as exc:
            problem = read_failure(pid, exc)
            if problem is None:
                vanished += 1
            else:
                problems.append(problem)
    return SkimResult(values, tuple(problems), vanished, True, lines, taken_ns)


def start_ticks_at(monotonic_ns: int) -> int:
    """The ``stat`` start time (clock ticks since boot) of a process started at
    ``monotonic_ns``. A process with this start time or a later one, not seen by a reading
    taken then, was born within the tick of the reading or after it: counted as born since
    (it may have joined the scope a few ms before, which changes nothing that matters). The
    start time counts from boot including suspend; the monotonic clock does not."""
    offset = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()
    return (monotonic_ns + offset) * CLOCK_TICKS // 1_000_000_000


def read_failure(pid: int, exc: OSError | ParseError) -> ScanProblem | None:
    """What a failed read of a process's files means: None when the process is gone (normal
    mid-scan: ENOENT, ESRCH), else the problem to report (a malformed file, EACCES on a
    hardened /proc, any other error)."""
    if isinstance(exc, ParseError):
        return ScanProblem(pid, str(exc))
    if isinstance(exc, FileNotFoundError | ProcessLookupError) or exc.errno == errno.ESRCH:
        return None
    return ScanProblem(pid, f"{exc.strerror}: {exc.filename}")


def list_pids(proc_root: str = "/proc") -> list[int]:
    return [int(name) for name in os.listdir(proc_root) if name.isdigit()]


def scan_processes(
    proc_root: str = "/proc",
    pids: Iterable[int] | None = None,
    *,
    cmdline_limit: int = DEFAULT_CMDLINE_LIMIT,
    deadline: float | None = None,
    cgroups: Mapping[int, str] | None = None,
    with_cmdline: bool = True,
) -> ScanResult:
    """Scan every process (or just ``pids``) in one call.

    ``deadline`` is a :func:`time.monotonic` value; past it the scan stops and reports
    ``complete=False`` with what it had. ``cgroups`` (PID -> v2 path, e.g. from
    :meth:`~pressured.kernel.cgroupfs.Cgroup.member_paths`) saves reading each process's
    ``cgroup`` file. Never raises for a process that vanished or a malformed file.
    """
    started = time.perf_counter_ns()
    records: list[ProcessRecord] = []
    problems: list[ScanProblem] = []
    vanished = 0
    complete = True
    try:
        candidates = list_pids(proc_root) if pids is None else list(pids)
    except OSError as exc:
        problems.append(ScanProblem(0, f"cannot list processes: {exc.strerror}: {exc.filename}"))
        candidates = []
    for index, pid in enumerate(candidates):
        if deadline is not None and index % 64 == 0 and time.monotonic() > deadline:
            complete = False
            break
        try:
            known = cgroups.get(pid) if cgroups is not None else None
            records.append(
                read_process(pid, proc_root, cmdline_limit, cgroup=known, with_cmdline=with_cmdline)
            )
        except (OSError, ParseError) as exc:
            problem = read_failure(pid, exc)
            if problem is None:
                vanished += 1
            else:
                problems.append(problem)
    return ScanResult(
        processes=tuple(records),
        problems=tuple(problems),
        vanished=vanished,
        complete=complete,
        duration_ns=time.perf_counter_ns() - started,
    )


def read_oom_score_adj(pid: int | str = "self", proc_root: str = "/proc") -> int:
    path = f"{proc_root}/{pid}/oom_score_adj"
    return _int_file(path, path)


def write_oom_score_adj(value: int, pid: int | str = "self", proc_root: str = "/proc") -> None:
    Path(f"{proc_root}/{pid}/oom_score_adj").write_text(f"{value}\n", encoding="ascii")


def read_meminfo(proc_root: str = "/proc") -> dict[str, int]:
    """``/proc/meminfo`` as bytes per key (the kB figures multiplied out)."""
    values: dict[str, int] = {}
    for line in _read_all(f"{proc_root}/meminfo").decode("ascii", "replace").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if not fields or not fields[0].isdigit():
            continue
        scale = 1024 if len(fields) > 1 and fields[1] == "kB" else 1
        values[key.strip()] = int(fields[0]) * scale
    return values
