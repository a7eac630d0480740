"""``pressured run``: the daemon in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from typing import NoReturn

import structlog

from pressured import __version__
from pressured.cli import startsignals
from pressured.cli.common import (
    add_config_arguments,
    config_path,
    report_config_error,
    settings_from_args,
)
from pressured.config import Settings
from pressured.errors import ConfigError, PressuredError, UnsafeFileError
from pressured.logs import configure_logging

EPILOG = """\
examples:
  pressured run                          watch the whole system on the built-in defaults
  pressured run --dry-run --cgroup /jobs decide and log, but kill nothing, in /jobs only
  pressured run -c /etc/pressured/pressured.toml --log-format console

signals: SIGTERM or SIGINT stop gracefully (a second SIGINT forces; a second SIGTERM while
stopping is logged and ignored); SIGHUP re-reads the configuration file and keeps the running
one if the new one is invalid. SIGTERM or SIGINT (Ctrl-C) before the controller is ready stops
start-up cleanly and nothing stays armed; a SIGHUP then is applied once running.
exit codes: 0 stopped cleanly (SIGTERM at any moment), 1 runtime failure, 2 invalid
configuration (nothing armed), 130 interrupted by Ctrl-C during start-up.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_arguments(parser)


def announce(settings: Settings, config: str | None) -> None:
    """The first log line: what is starting, and above all whether it will kill anything."""
    logger = structlog.get_logger("pressured")
    logger.info(
        "daemon.starting",
        dry_run=settings.daemon.dry_run,
        version=__version__,
        pid=os.getpid(),
        config=config,
        loop=settings.daemon.loop,
    )
    if settings.daemon.dry_run:
        logger.warning("daemon.dry_run", detail="decides and logs victims, sends no signal")


def run(args: argparse.Namespace) -> int:
    # Ctrl-C or SIGTERM can land anywhere while loading the configuration, importing or
    # arming; each step that set something up undoes it on the way out (the controller
    # disarms, threads stop), so here it only remains to say so and exit without a traceback.
    #
    # The handlers that raise are installed by the command's entry point before this module
    # is even imported (pressured.cli.main, pressured.cli.startsignals). Raising at once,
    # like Python's default SIGINT handler, they also keep asyncio.Runner from installing its
    # own, which only cancels the main task on the first Ctrl-C: a start-up step that does
    # not await (a policy plugin's import, a slow read) would ignore it until done. Once
    # running, the controller's loop handlers take over and stop gracefully.
    try:
        return _run(args)
    except BaseException as exc:
        interrupt = startsignals.interruption(exc)
        if interrupt is None:
            raise
        structlog.get_logger("pressured").info(
            "daemon.interrupted", signal=startsignals.signal_name(interrupt)
        )
        _exit_now(startsignals.exit_status(interrupt))


def _exit_now(code: int) -> NoReturn:
    """Exit with ``code`` now, once the daemon has stopped (or start-up has unwound).

    The shutdown recipe (disarm, stop deciding, close policies and sinks, stop the reaper)
    has run by then; what the interpreter would still do is join every worker thread, one of
    which may be in the middle of a /proc read that a memory-starved host takes seconds to
    answer, and tear down every module. Neither serves anyone, and SIGTERM must end the
    process within a second. Also, when a KeyboardInterrupt has passed through native code
    that runs Python (pydantic-core, Cython modules), CPython would kill itself with SIGINT
    at exit instead of exiting with our status.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except (ConfigError, UnsafeFileError) as exc:
        return report_config_error(exc)
    configure_logging(settings.daemon.log_format, settings.daemon.log_level)
    announce(settings, config_path(args))
    from pressured.cli.common import settings_from_args_async
    from pressured.daemon import run as run_daemon

    # Most of start-up so far was imports, after each of which importlib drops a module lock
    # in a weakref callback, where a stop signal's exception is swallowed: stop now if one was.
    startsignals.raise_missed()
    try:
        run_daemon(
            settings,
            reload=functools.partial(settings_from_args_async, args),
            # A stop lost later in start-up (a policy plugin's import, say) or a SIGHUP: the
            # controller acts on it as soon as its own handlers are installed.
            early_signals=startsignals.take_pending,
        )
    except (ConfigError, UnsafeFileError) as exc:
        # Policies are loaded (and scope paths, port and journal checked) at start-up, before
        # any trigger. A stop signal may be what failed: a plugin loader reports whatever its
        # import raised as a failed import, a SIGTERM wrapped by CPython's __set_name__ too.
        startsignals.raise_missed()
        return report_config_error(exc)
    except PressuredError as exc:
        startsignals.raise_missed()
        structlog.get_logger("pressured").error("controller.failed", error=str(exc))
        return 1
    _exit_now(0)
