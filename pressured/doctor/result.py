"""What one doctor check found: :class:`Status` and :class:`CheckResult`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["CheckResult", "Status"]


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    """pressured runs, with less than the best this feature could give."""
    FAIL = "fail"
    """An essential feature is missing: pressured cannot do its job here."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One fact about this host, as found by trying it.

    ``remedy`` is one sentence saying what to change; every result that is not ``ok`` has one.
    ``essential`` checks decide :attr:`DoctorReport.can_run`. ``facts`` are the raw figures
    behind ``detail``, for ``--json``.
    """

    name: str
    status: Status
    detail: str
    remedy: str | None = None
    essential: bool = False
    facts: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status is not Status.OK and not self.remedy:
            raise ValueError(f"check {self.name!r} is {self.status} but has no remedy")

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "status": str(self.status),
            "essential": self.essential,
            "detail": self.detail,
            "remedy": self.remedy,
            "facts": dict(self.facts),
        }
