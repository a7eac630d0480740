"""structlog configuration: JSON lines when stdout is not a terminal, readable lines when it is.

Event names are stable and dotted (``pressure.event``, ``policy.decided``, ``victim.killed``);
fields are typed values, never prose to be parsed.

Three things an operator relies on, each done here once for every line:

- **One stream, one format.** Records from the standard library's ``logging`` (asyncio's own
  "Exception in callback", "Task exception was never retrieved", libraries, ``warnings``) go
  through the same processors and renderer as pressured's own lines, so a JSON consumer never
  meets a bare traceback.
- **Priorities under journald.** When stdout is the journal stream systemd gave us
  (``$JOURNAL_STREAM`` names its device and inode), every line starts with an sd-daemon
  priority prefix (``<3>`` for an error, ``<4>`` a warning, ...), which journald strips and
  stores as the entry's priority: ``journalctl -p err -u pressured`` then works.
- **Nothing reaches a terminal as a control sequence.** Cgroup names are chosen by whoever
  created the group and policy reasons by plugin authors; on the console renderer every string
  value is escaped (``\\x1b``, ``\\n``, ``\\u202e``), as comm and cmdline already are when they
  are read. JSON lines need nothing more: the encoder escapes control characters itself.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

from pressured.config import LogFormat, LogLevel

__all__ = ["configure_logging", "journal_stream_matches", "syslog_priority", "terminal_safe"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# sd-daemon(3) / syslog(3) priorities for the log levels structlog and logging name.
_SYSLOG_PRIORITY = {
    "debug": 7,
    "info": 6,
    "notice": 5,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
    "fatal": 2,
}
_DEFAULT_PRIORITY = 6

# Values that are multi-line by nature (formatted tracebacks): keep their newlines, escape the
# rest of what a terminal would interpret.
_MULTILINE_KEYS = frozenset({"exception", "stack"})


def syslog_priority(level: str) -> int:
    """The syslog priority (0 emerg .. 7 debug) of a log level name; info if unknown."""
    return _SYSLOG_PRIORITY.get(level.lower(), _DEFAULT_PRIORITY)


def journal_stream_matches(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journald stream systemd connected this service to.

    systemd sets ``JOURNAL_STREAM=<st_dev>:<st_ino>`` of that socket. The variable alone is not
    enough: it is inherited by children whose output goes elsewhere, so compare it with what
    the stream really is (systemd.exec(5) recommends exactly this check).
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        expected = (int(device), int(inode))
        actual = os.fstat(stream.fileno())
    except (ValueError, OSError, io.UnsupportedOperation):
        return False
    return (actual.st_dev, actual.st_ino) == expected


def terminal_safe(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every character a terminal would act on escaped, and backslashes doubled
    so the escaped form is unambiguous: ``"a\\x1b[2Jb"`` shows as ``a\\x1b[2Jb``.

    ``keep_newlines`` is for tracebacks: lines stay lines and backslashes stay single (they
    are source code), while control characters are still escaped."""
    if text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to do, no copy
    out = []
    for char in text:
        if char == "\\" and not keep_newlines:
            out.append("\\\\")
        elif char.isprintable() or (keep_newlines and char == "\n"):
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


class _Escaped(str):
    """A string already made terminal-safe. The console renderer shows some values with
    ``repr()`` (those with spaces, quotes, ``=``), which would double every backslash of the
    escapes again: this repr only adds the quotes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'" + self.replace("'", "\\'") + "'"


def _escape_for_terminal(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Top-level strings only: the console renderer shows containers (figures, ranking) with
    # repr(), which escapes the strings inside them already.
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = _Escaped(terminal_safe(value, keep_newlines=key in _MULTILINE_KEYS))
    return event_dict


def _rename_pressure_level(_logger: Any, _method: str, event_dict: Any) -> Any:
    # Callers may pass the PSI level as level=...; the log line's own severity also wants
    # "level". Keep both: the PSI level becomes "pressure_level", the name it has everywhere
    # (see pressured.events.PRESSURE_LEVEL_KEY).
    if "level" in event_dict:
        event_dict["pressure_level"] = event_dict.pop("level")
    return event_dict


class _PrefixedRenderer:
    """Renders with ``inner``, then (under journald) starts every line with ``<priority>``."""

    def __init__(self, inner: Processor, *, priority_prefix: bool) -> None:
        self._inner = inner
        self._priority_prefix = priority_prefix

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        level = str(event_dict.get("level", method))
        text = str(self._inner(logger, method, event_dict))
        if not self._priority_prefix:
            return text
        # journald reads the prefix per line: a traceback's lines keep the error's priority.
        prefix = f"<{syslog_priority(level)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


_HANDLER_MARK = "_pressured_handler"


def _install_stdlib_handler(
    stream: TextIO, level: int, pre_chain: Sequence[Processor], post_chain: Sequence[Processor]
) -> None:
    """Route the root ``logging`` logger through the same processors, replacing the handler a
    previous call installed (configure_logging may run more than once in one process)."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *pre_chain],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *post_chain],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


def configure_logging(
    fmt: LogFormat = "auto",
    level: LogLevel = "info",
    stream: TextIO | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Configure structlog, and the standard library's ``logging``, for the daemon.

    Library users keep their own configuration: only ``pressured run`` (and the CLI) calls
    this. ``environ`` (default ``os.environ``) is where ``JOURNAL_STREAM`` is looked up.
    """
    out = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    inner: Processor = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    pre_chain: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _rename_pressure_level,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    post_chain: list[Processor] = [] if use_json else [_escape_for_terminal]
    post_chain.append(
        _PrefixedRenderer(inner, priority_prefix=journal_stream_matches(out, environ))
    )
    structlog.configure(
        processors=[*pre_chain, *post_chain],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _install_stdlib_handler(out, _LEVELS[level], pre_chain, post_chain)
