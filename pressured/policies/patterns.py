"""Match rules shared by the process policies (earlyoom's ``--prefer/--avoid/--ignore``,
nohang's name/cmdline/cgroup/uid matching).

A :class:`ProcessPattern` names up to four things about a process; *every* field given must
match (so ``{name = "^java$", uid = 1000}`` means "java run by uid 1000"). The text fields are
regular expressions *searched* in the value (anchor with ``^...$`` for an exact match), as
earlyoom does. In configuration a bare string is short for ``{name = "..."}``::

    prefer = ["^(chrome|firefox)$", { cmdline = "--type=renderer" }]
    ignore = [{ cgroup = "^/system.slice/" }, { uid = 0 }]

Patterns are compiled once, when the options are validated, so a bad regular expression is a
configuration error pointing at ``...options.prefer.1.cmdline``, not a failure under pressure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from pressured.kernel.procfs import ProcessRecord


class ProcessPattern(BaseModel):
    """Matches a process when every given field matches (regexes are searched, uid is equal)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, description="Regex searched in the process name.")
    cmdline: str | None = Field(default=None, description="Regex searched in the command line.")
    cgroup: str | None = Field(default=None, description="Regex searched in the cgroup v2 path.")
    uid: int | None = Field(default=None, ge=0, description="Real user id, compared exactly.")

    _compiled: tuple[tuple[str, re.Pattern[str]], ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _bare_string_is_a_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name", "cmdline", "cgroup")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> ProcessPattern:
        if self.name is None and self.cmdline is None and self.cgroup is None and self.uid is None:
            raise ValueError("a pattern needs at least one of name, cmdline, cgroup, uid")
        return self

    def model_post_init(self, context: Any, /) -> None:
        fields = (("name", self.name), ("cmdline", self.cmdline), ("cgroup", self.cgroup))
        self._compiled = tuple((key, re.compile(rx)) for key, rx in fields if rx is not None)

    def matches(self, record: ProcessRecord) -> bool:
        if self.uid is not None and record.uid != self.uid:
            return False
        values = {"name": record.comm, "cmdline": record.cmdline, "cgroup": record.cgroup or ""}
        return all(regex.search(values[key]) is not None for key, regex in self._compiled)

    def describe(self) -> str:
        fields = (("name", self.name), ("cmdline", self.cmdline), ("cgroup", self.cgroup))
        parts = [f"{key}~{value!r}" for key, value in fields if value is not None]
        if self.uid is not None:
            parts.append(f"uid={self.uid}")
        return " ".join(parts)


def first_match(patterns: Iterable[ProcessPattern], record: ProcessRecord) -> ProcessPattern | None:
    """The first pattern that matches ``record``, or None."""
    for pattern in patterns:
        if pattern.matches(record):
            return pattern
    return None


def any_match(patterns: Iterable[ProcessPattern], record: ProcessRecord) -> bool:
    return first_match(patterns, record) is not None
