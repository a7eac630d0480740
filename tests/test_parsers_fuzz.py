"""Garbage in, ParseError (or a valid result) out: the kernel-file parsers never leak anything else.

The daemon parses files of processes that may be exiting, of kernels we have not seen, and
mountinfo lines with escaped paths. A stray ``IndexError`` or ``ValueError`` from a parser would
crash a scan or the controller, so every parser is held to one contract: it returns a value of
its documented type or raises :class:`pressured.errors.ParseError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from pressured.errors import ParseError
from pressured.kernel.cgroupfs import CgroupLayout, parse_flat_keyed, parse_mountinfo
from pressured.kernel.procfs import (
    StatFields,
    StatusFields,
    format_cmdline,
    parse_stat,
    parse_status,
)
from pressured.kernel.psi import Pressure, parse_pressure

T = TypeVar("T")

FUZZ = settings(max_examples=300, deadline=None)

# Text that looks a little like kernel files, so hypothesis reaches the deeper branches, mixed
# with anything at all.
_WORDS = st.sampled_from(
    [
        "some",
        "full",
        "avg10=0.00",
        "avg60=1e400",
        "avg300=nan",
        "total=",
        "total=" + "9" * 5000,
        "(",
        ")",
        " - ",
        "cgroup2",
        "cgroup",
        "rw,memory",
        "\\040",
        "\\999",
        "\\٣٣٣",
        "\\²²²",
        "Uid:",
        "VmSwap:",
        "9" * 5000,
        "-1",
        "\n",
        "\0",
        " ",
        "max",
        "populated 1",
    ]
)
_SEPARATORS = st.sampled_from([" ", " ", " ", "\n", "\t", "", "="])
_KERNELISH_TEXT = st.lists(
    st.tuples(st.one_of(_WORDS, st.text(max_size=12)), _SEPARATORS), max_size=40
).map(lambda parts: "".join(word + sep for word, sep in parts))
TEXT = st.one_of(st.text(max_size=400), _KERNELISH_TEXT)

# mountinfo lines with the right number of fields, each field garbage: reaches the unescaping of
# mount points and roots, which free text almost never does.
_FIELD = st.one_of(_WORDS, st.text(max_size=8)).map(lambda w: w.replace(" ", "").strip() or "x")
_FS_TYPE = st.one_of(st.sampled_from(["cgroup2", "cgroup"]), _FIELD)
_MOUNTINFO_LINE = st.tuples(
    st.lists(_FIELD, min_size=5, max_size=8), _FS_TYPE, st.lists(_FIELD, min_size=2, max_size=3)
).map(lambda p: " ".join(p[0]) + " - " + p[1] + " " + " ".join(p[2]))
MOUNTINFO = st.one_of(TEXT, st.lists(_MOUNTINFO_LINE, max_size=6).map("\n".join))
DATA = st.one_of(st.binary(max_size=400), TEXT.map(lambda t: t.encode("utf-8", "replace")))


def _parses_or_parse_error(parse: Callable[[], T], expected: type) -> None:
    try:
        result = parse()
    except ParseError:
        return
    assert isinstance(result, expected)


@FUZZ
@given(TEXT)
def test_parse_pressure_fuzz(text: str) -> None:
    """parse_pressure returns a Pressure or raises ParseError."""
    _parses_or_parse_error(lambda: parse_pressure(text), Pressure)


@FUZZ
@given(DATA)
def test_parse_stat_fuzz(data: bytes) -> None:
    """parse_stat returns StatFields or raises ParseError."""
    _parses_or_parse_error(lambda: parse_stat(data), StatFields)


@FUZZ
@given(DATA)
def test_parse_status_fuzz(data: bytes) -> None:
    """parse_status returns StatusFields or raises ParseError."""
    _parses_or_parse_error(lambda: parse_status(data), StatusFields)


@FUZZ
@given(MOUNTINFO)
def test_parse_mountinfo_fuzz(text: str) -> None:
    """parse_mountinfo returns a CgroupLayout or raises ParseError."""
    _parses_or_parse_error(lambda: parse_mountinfo(text), CgroupLayout)


@FUZZ
@given(TEXT)
def test_parse_flat_keyed_fuzz(text: str) -> None:
    """parse_flat_keyed returns a dict of ints or raises ParseError."""
    try:
        result = parse_flat_keyed(text, "<fuzz>")
    except ParseError:
        return
    assert all(isinstance(key, str) and isinstance(v, int) for key, v in result.items())


@FUZZ
@given(DATA, st.integers(min_value=0, max_value=600))
def test_format_cmdline_fuzz(data: bytes, limit: int) -> None:
    """format_cmdline never raises and never returns more than ``limit`` printable characters."""
    text, truncated = format_cmdline(data, limit)
    assert len(text) <= limit
    assert text.isprintable()
    assert isinstance(truncated, bool)


def test_mountinfo_bad_octal_escape_is_kept_literally() -> None:
    """A backslash not followed by three octal digits stays as written (regression)."""
    line = "41 31 0:38 / /a\\999b rw - cgroup2 cgroup2 rw\n"
    layout = parse_mountinfo(line)
    assert layout.unified is not None
    assert layout.unified.mount_point == "/a\\999b"


def test_status_with_absurdly_long_uid_is_a_parse_error() -> None:
    """A Uid longer than Python's int-conversion limit is a ParseError, not a ValueError."""
    data = b"Name:\tx\nUid:\t" + b"9" * 5000 + b"\t0\t0\t0\n"
    try:
        parse_status(data)
    except ParseError:
        return
    raise AssertionError("expected ParseError")
