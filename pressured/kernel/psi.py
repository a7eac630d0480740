"""Pressure stall information: parse pressure files, validate and create trigger fds.

Synchronous and loop-free on purpose: the asyncio layer (``pressured.monitors``) composes these.
The trigger rules are the kernel's (``kernel/sched/psi.c``) as checked on our machines:

* ``0 < threshold <= window`` and ``500 ms <= window <= 10 s``;
* without CAP_SYS_RESOURCE (judged on the credentials that *opened* the fd) the window must also
  be a multiple of 2 s, and the trigger is only checked on the 2 s averaging tick.
"""

from __future__ import annotations

import errno as errno_mod
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pressured.errors import ParseError, TriggerError, TriggerSpecError
from pressured.kernel.caps import CAP_SYS_RESOURCE, has_capability

US_PER_S = 1_000_000
WINDOW_MIN_US = 500_000
WINDOW_MAX_US = 10 * US_PER_S
UNPRIVILEGED_WINDOW_STEP_US = 2 * US_PER_S


class Resource(StrEnum):
    MEMORY = "memory"
    CPU = "cpu"
    IO = "io"


Kind = Literal["some", "full"]


@dataclass(frozen=True, slots=True)
class PressureLine:
    """One line of a pressure file: the share of wall time stalled, as percentages, and the
    cumulative stall in microseconds."""

    avg10: float
    avg60: float
    avg300: float
    total_us: int


@dataclass(frozen=True, slots=True)
class Pressure:
    """A whole pressure file. ``full`` is None where the kernel does not report it."""

    some: PressureLine
    full: PressureLine | None

    def line(self, kind: Kind) -> PressureLine | None:
        return self.some if kind == "some" else self.full


_FIELDS = ("avg10", "avg60", "avg300", "total")


def _parse_line(words: list[str], source: str) -> PressureLine:
    values: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or key not in _FIELDS:
            raise ParseError(source, f"unexpected field {word[:40]!r}")
        if key in values:
            raise ParseError(source, f"field {key!r} appears twice")
        values[key] = value
    missing = [name for name in _FIELDS if name not in values]
    if missing:
        raise ParseError(source, f"missing field(s) {', '.join(missing)}")
    try:
        averages = [float(values[name]) for name in _FIELDS[:3]]
        total = int(values["total"])
    except ValueError as exc:
        raise ParseError(source, f"non-numeric value: {exc}") from None
    if any(not 0.0 <= avg <= 100.0 for avg in averages) or total < 0:
        raise ParseError(source, "value out of range (averages 0..100, total >= 0)")
    return PressureLine(averages[0], averages[1], averages[2], total)


def parse_pressure(text: str, source: str = "<text>") -> Pressure:
    """Parse the text of ``/proc/pressure/*`` or a cgroup ``*.pressure`` file.

    Raises :class:`ParseError` for anything that is not exactly the documented format.
    """
    lines: dict[str, PressureLine] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        kind, *words = raw.split()
        if kind not in ("some", "full"):
            raise ParseError(source, f"line starts with {kind[:40]!r}, not 'some' or 'full'")
        if kind in lines:
            raise ParseError(source, f"'{kind}' line appears twice")
        lines[kind] = _parse_line(words, source)
    if "some" not in lines:
        raise ParseError(source, "no 'some' line")
    return Pressure(some=lines["some"], full=lines.get("full"))


def read_pressure(path: str | os.PathLike[str]) -> Pressure:
    """Read and parse one pressure file.

    Careful: reading a group's pressure file pushes back the 2 s tick on which *unprivileged*
    triggers of that group are checked. Never call this at short intervals on a group that has
    an unprivileged trigger armed (see docs/design.md, "Readers starve unprivileged triggers").
    """
    with open(path, encoding="ascii", errors="replace") as handle:
        return parse_pressure(handle.read(), str(path))


def system_pressure_path(resource: Resource | str, proc_root: str = "/proc") -> Path:
    return Path(proc_root) / "pressure" / str(Resource(resource))


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """``<kind> <threshold_us> <window_us>`` for one resource: fire when tasks stalled for at
    least ``threshold_us`` within any ``window_us``."""

    resource: Resource
    kind: Kind
    threshold_us: int
    window_us: int

    def validate(self, *, privileged: bool = True) -> None:
        """Raise :class:`TriggerSpecError` naming the first kernel rule this spec breaks."""
        if self.kind not in ("some", "full"):
            raise TriggerSpecError(f"kind must be 'some' or 'full', not {self.kind!r}")
        if self.threshold_us <= 0:
            raise TriggerSpecError(f"threshold must be > 0 us (got {self.threshold_us})")
        if not WINDOW_MIN_US <= self.window_us <= WINDOW_MAX_US:
            raise TriggerSpecError(
                f"window must be between {WINDOW_MIN_US} and {WINDOW_MAX_US} us "
                f"(got {self.window_us})"
            )
        if self.threshold_us > self.window_us:
            raise TriggerSpecError(
                f"threshold ({self.threshold_us} us) must not exceed the window "
                f"({self.window_us} us)"
            )
        if not privileged and self.window_us % UNPRIVILEGED_WINDOW_STEP_US:
            raise TriggerSpecError(
                f"without CAP_SYS_RESOURCE the window must be a multiple of 2 s "
                f"(got {self.window_us} us)"
            )

    @property
    def stall_ratio(self) -> float:
        return self.threshold_us / self.window_us

    def kernel_text(self) -> bytes:
        """What is written to the pressure file: NUL-terminated, as the kernel parses it."""
        return f"{self.kind} {self.threshold_us} {self.window_us}".encode("ascii") + b"\0"

    def __str__(self) -> str:
        return (
            f"{self.resource} {self.kind} {self.threshold_us / 1000:g}ms/"
            f"{self.window_us / 1000:g}ms"
        )


@dataclass(frozen=True, slots=True)
class WindowAdjustment:
    """What :func:`legalize` changed, so the caller can log it."""

    requested: TriggerSpec
    effective: TriggerSpec
    reason: str


def legalize(spec: TriggerSpec, *, privileged: bool) -> tuple[TriggerSpec, WindowAdjustment | None]:
    """Return a spec the kernel will accept for this privilege, and what was changed.

    Unprivileged windows are rounded *up* to the next multiple of 2 s (at most 10 s) and the
    threshold scaled to keep the same stall ratio, so "7 % of the time stalled" keeps meaning
    that. A spec that breaks a rule no adjustment can fix (threshold > window, window > 10 s)
    raises :class:`TriggerSpecError`.
    """
    # Rules independent of privilege first: an adjustment must never hide a config mistake.
    spec.validate(privileged=True)
    if privileged or spec.window_us % UNPRIVILEGED_WINDOW_STEP_US == 0:
        return spec, None
    step = UNPRIVILEGED_WINDOW_STEP_US
    window = min(WINDOW_MAX_US, -(-spec.window_us // step) * step)
    threshold = max(1, min(window, round(spec.threshold_us * window / spec.window_us)))
    effective = TriggerSpec(spec.resource, spec.kind, threshold, window)
    effective.validate(privileged=False)
    reason = (
        "no CAP_SYS_RESOURCE: unprivileged PSI triggers need a window that is a multiple of "
        "2 s and are checked only every 2 s; threshold scaled to keep the stall ratio "
        f"({spec.stall_ratio:.1%})"
    )
    return effective, WindowAdjustment(spec, effective, reason)


def may_use_fast_windows(proc_root: str = "/proc") -> bool:
    """Whether triggers opened by this process may use sub-2 s windows (CAP_SYS_RESOURCE)."""
    return has_capability(CAP_SYS_RESOURCE, proc_root)


def open_trigger(path: str | os.PathLike[str], spec: TriggerSpec) -> int:
    """Open ``path`` (a pressure file) and arm ``spec`` on it; return the trigger fd.

    The fd is always readable; only ``EPOLLPRI`` means "the trigger fired", and polling it
    consumes that event. The caller owns the fd and must ``os.close`` it to disarm.
    """
    spec.validate(privileged=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TriggerError(
            f"cannot open {path} for a trigger: {exc.strerror}", exc.errno or 0
        ) from None
    try:
        os.write(fd, spec.kernel_text())
    except OSError as exc:
        os.close(fd)
        hint = ""
        if exc.errno == errno_mod.EINVAL and spec.window_us % UNPRIVILEGED_WINDOW_STEP_US:
            hint = " (without CAP_SYS_RESOURCE the window must be a multiple of 2 s)"
        elif exc.errno == errno_mod.EOPNOTSUPP:
            hint = " (PSI is disabled: boot with psi=1)"
        raise TriggerError(
            f"kernel refused trigger '{spec}' on {path}: {exc.strerror}{hint}", exc.errno or 0
        ) from None
    return fd
