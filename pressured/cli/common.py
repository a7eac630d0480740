"""Arguments and config loading shared by the subcommands that read a configuration."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pressured.config import Settings, load_settings
from pressured.errors import ConfigError, UnsafeFileError
from pressured.safety import check_not_world_writable

DEFAULT_CONFIG = "/etc/pressured/pressured.toml"
EXIT_CONFIG = 2


def add_config_arguments(
    parser: argparse.ArgumentParser, *, daemon_flags: bool = True, scope_flag: bool = True
) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"TOML configuration file (default: {DEFAULT_CONFIG} if it exists, else built-in "
        "defaults). Environment PRESSURED_SECTION__KEY=value overrides the file.",
    )
    if scope_flag:
        parser.add_argument(
            "--cgroup",
            metavar="PATH",
            help="watch one cgroup v2 group (e.g. /jobs) instead of the whole system",
        )
    if daemon_flags:
        parser.add_argument(
            "--dry-run", action="store_true", default=None, help="do everything except send signals"
        )
        parser.add_argument(
            "--loop",
            choices=("uvloop", "asyncio"),
            help="event loop implementation (default: uvloop)",
        )
        parser.add_argument(
            "--log-format",
            choices=("auto", "json", "console"),
            help="log format (default: JSON when stdout is not a terminal)",
        )
        parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


def config_path(args: argparse.Namespace) -> str | None:
    if args.config:
        return str(args.config)
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    daemon: dict[str, Any] = {}
    for flag, key in (
        ("dry_run", "dry_run"),
        ("loop", "loop"),
        ("log_format", "log_format"),
        ("log_level", "log_level"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            daemon[key] = value
    return {"daemon": daemon} if daemon else {}


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Load and validate; raises ConfigError / UnsafeFileError with a field path or file."""
    path = config_path(args)
    if path is not None:
        check_not_world_writable(path, what="configuration file")
    return load_settings(path, cgroup=getattr(args, "cgroup", None), overrides=cli_overrides(args))


def report_config_error(exc: ConfigError | UnsafeFileError) -> int:
    if isinstance(exc, ConfigError):
        where = f"{exc.source}: " if exc.source else ""
        print(
            f"pressured: invalid configuration: {where}{exc.field}: {exc.reason}", file=sys.stderr
        )
    else:
        print(f"pressured: refusing unsafe file: {exc}", file=sys.stderr)
    return EXIT_CONFIG
