"""The ``pressured`` command: one module per subcommand, imported only when it runs.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Exit codes:
0 success, 1 runtime failure (or "cannot run here" for ``doctor``), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from pressured import __version__

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


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, _Subcommand]]:
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
        try:
            module: _Subcommand = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # subcommand not built yet
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(subparser)
        modules[name] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return modules[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
