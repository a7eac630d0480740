"""structlog configuration: JSON lines when stdout is not a terminal, readable lines when it is.

Event names are stable and dotted (``pressure.event``, ``policy.decided``, ``victim.killed``);
fields are typed values, never prose to be parsed.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from pressured.config import LogFormat, LogLevel

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _rename_pressure_level(_logger: Any, _method: str, event_dict: Any) -> Any:
    # Pressure events and kill records carry a "level" (the PSI level that fired); the log
    # line's own severity also wants "level". Keep both: ours becomes "pressure_level".
    if "level" in event_dict:
        event_dict["pressure_level"] = event_dict.pop("level")
    return event_dict


def configure_logging(
    fmt: LogFormat = "auto", level: LogLevel = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog for the daemon. Library users keep their own configuration: only
    ``pressured run`` (and the CLI) calls this."""
    out = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _rename_pressure_level,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
