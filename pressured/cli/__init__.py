"""The ``pressured`` command: one module per subcommand, imported only when it runs.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Exit codes:
0 success, 1 runtime failure (or "cannot run here" for ``doctor``), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Protocol

from pressured import __version__
from pressured.cli import startsignals

# pydantic looks for plugins of its own in every installed distribution's metadata the first
# time a model is built: dozens of file reads before the daemon arms its triggers, each a disk
# read on a thrashing host that has evicted them (tests/test_startup.py counts them). The
# command has no use for pydantic plugins; library users keep pydantic's default, and a value
# set in the environment wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

# name -> (module, one-line help). Order is the order shown in --help.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("pressured.cli.run", "run the controller (the daemon) in the foreground"),
    "check": ("pressured.cli.check", "validate a configuration file and print the effective one"),
    "doctor": ("pressured.cli.doctor", "check what this host supports and what pressured will do"),
    "rank": ("pressured.cli.rank", "show the current ranking of victims, killing nothing"),
    "policies": ("pressured.cli.policies", "list built-in and installed policies and options"),
    "status": ("pressured.cli.status", "print a running daemon's status"),
    "log": ("pressured.cli.log", "show the last kills from the kill journal"),
}


class _Subcommand(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module_name: str) -> _Subcommand:
    module: _Subcommand = importlib.import_module(module_name)
    return module


def build_parser(
    chosen: str | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, _Subcommand]]:
    """The parser with every subcommand listed; only ``chosen`` (if any) is imported, so one
    subcommand's heavy or broken imports never slow down or break another."""
    parser = argparse.ArgumentParser(
        prog="pressured",
        description="Event-driven memory-pressure controller: PSI triggers, pidfd kills and "
        "process_mrelease reaping.",
        epilog="Run 'pressured doctor' first to see what this host supports.",
    )
    parser.add_argument("--version", action="version", version=f"pressured {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, _Subcommand] = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            modules[name] = _load(module_name)
            modules[name].add_arguments(subparser)
    return parser, modules


def _chosen(argv: Sequence[str]) -> str | None:
    for word in argv:
        if word in SUBCOMMANDS:
            return word
        if not word.startswith("-"):
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen(words)
    # For `run`, before the daemon's modules are imported (a fifth of a second, much more on
    # a thrashing host): a SIGTERM from here on stops start-up cleanly instead of killing the
    # process mid-way.
    previous = startsignals.install() if chosen == "run" else {}
    try:
        return _main(words, chosen)
    except BaseException as exc:
        # Ctrl-C or SIGTERM while a subcommand is still importing or starting: a clean stop,
        # not a crash (even where Python wrapped it in another exception).
        interrupt = startsignals.interruption(exc)
        if interrupt is None:
            raise
        return startsignals.exit_status(interrupt)
    finally:
        startsignals.restore(previous)


def _main(words: list[str], chosen: str | None) -> int:
    parser, modules = build_parser(chosen)
    args = parser.parse_args(words)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return modules[args.command].run(args)
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
