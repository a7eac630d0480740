"""``pressured run``: the daemon in the foreground."""

from __future__ import annotations

import argparse
import functools

import structlog

from pressured.cli.common import add_config_arguments, report_config_error, settings_from_args
from pressured.errors import ConfigError, PressuredError, UnsafeFileError
from pressured.logs import configure_logging

EPILOG = """\
examples:
  pressured run                          watch the whole system on the built-in defaults
  pressured run --dry-run --cgroup /jobs decide and log, but kill nothing, in /jobs only
  pressured run -c /etc/pressured/pressured.toml --log-format console

signals: SIGTERM or SIGINT stop gracefully (a second SIGINT forces); SIGHUP re-reads the
configuration file and keeps the running one if the new one is invalid.
exit codes: 0 stopped cleanly, 1 runtime failure, 2 invalid configuration (nothing armed).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except (ConfigError, UnsafeFileError) as exc:
        return report_config_error(exc)
    configure_logging(settings.daemon.log_format, settings.daemon.log_level)
    from pressured.daemon import run as run_daemon

    try:
        run_daemon(settings, reload=functools.partial(settings_from_args, args))
    except (ConfigError, UnsafeFileError) as exc:
        # Policies are loaded (and scope paths checked) at start-up, before any trigger.
        return report_config_error(exc)
    except PressuredError as exc:
        structlog.get_logger("pressured").error("controller.failed", error=str(exc))
        return 1
    return 0
