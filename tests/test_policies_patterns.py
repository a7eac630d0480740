"""Match patterns shared by the process policies: name, cmdline, cgroup and uid."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from pressured.policies.patterns import ProcessPattern, first_match
from pressured.testing import make_process

PATTERNS = TypeAdapter(tuple[ProcessPattern, ...])


def test_bare_string_is_a_name_pattern() -> None:
    """A plain string in configuration means {name = ...}."""
    (pattern,) = PATTERNS.validate_python(["^java$"])
    assert pattern.name == "^java$"
    assert pattern.matches(make_process(1, comm="java"))
    assert not pattern.matches(make_process(1, comm="javac"))


def test_regex_is_searched_not_anchored() -> None:
    """Like earlyoom, an unanchored regex matches anywhere in the value."""
    assert ProcessPattern(name="rome").matches(make_process(1, comm="chrome"))


def test_cmdline_pattern() -> None:
    """cmdline patterns search the command line."""
    pattern = ProcessPattern(cmdline="--type=renderer")
    assert pattern.matches(make_process(1, cmdline="/opt/chrome --type=renderer"))
    assert not pattern.matches(make_process(1, cmdline="/opt/chrome"))


def test_cgroup_pattern_and_missing_cgroup() -> None:
    """cgroup patterns search the cgroup path; a process without one does not match."""
    pattern = ProcessPattern(cgroup="^/batch/")
    assert pattern.matches(make_process(1, cgroup="/batch/job"))
    assert not pattern.matches(make_process(1, cgroup=None))


def test_every_given_field_must_match() -> None:
    """name and uid together mean both."""
    pattern = ProcessPattern(name="java", uid=1000)
    assert pattern.matches(make_process(1, comm="java", uid=1000))
    assert not pattern.matches(make_process(1, comm="java", uid=0))


def test_empty_pattern_is_rejected() -> None:
    """A pattern with no field would match everything: refused."""
    with pytest.raises(ValidationError, match="at least one"):
        ProcessPattern()


def test_bad_regex_is_rejected_with_its_text() -> None:
    """An invalid regex is a validation error quoting it."""
    with pytest.raises(ValidationError, match=r"'\(oops'"):
        ProcessPattern(cmdline="(oops")


def test_unknown_key_is_rejected() -> None:
    """Typos in a pattern are errors."""
    with pytest.raises(ValidationError):
        PATTERNS.validate_python([{"nmae": "x"}])


def test_first_match_returns_the_matching_pattern() -> None:
    """first_match gives the first pattern that matches, for evidence."""
    patterns = PATTERNS.validate_python(["^db$", {"uid": 7}])
    assert first_match(patterns, make_process(1, comm="x", uid=7)) is patterns[1]
    assert first_match(patterns, make_process(1, comm="x")) is None


def test_describe_lists_fields() -> None:
    """describe() is a short readable form for logs."""
    assert ProcessPattern(name="a", uid=3).describe() == "name~'a' uid=3"
