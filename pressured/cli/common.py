"""Arguments and config loading shared by the subcommands that read a configuration."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

from pressured.config import ConfigErrors, Settings, load_settings
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
            help="watch one cgroup v2 group instead of the whole system: /jobs, jobs, "
            "/sys/fs/cgroup/jobs (a path under the cgroup2 mount) or 0::/jobs (as "
            "/proc/PID/cgroup prints it); 'pod' is this container's pod",
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


def settings_from_args(
    args: argparse.Namespace,
    *,
    resolve_pod: bool = True,
    contents: Mapping[str, Any] | None = None,
) -> Settings:
    """Load and validate; raises ConfigError / UnsafeFileError with a field path or file.

    ``resolve_pod``: replace a ``cgroup = "pod"`` scope by the group it means on this host
    (what ``run`` and ``rank`` need; ``check`` reports it separately). ``contents``: the
    file, already checked and read (see :func:`settings_from_args_async`)."""
    path = config_path(args)
    if path is not None and contents is None:
        check_not_world_writable(path, what="configuration file")
    settings = load_settings(
        path,
        cgroup=getattr(args, "cgroup", None),
        overrides=cli_overrides(args),
        contents=contents,
    )
    if resolve_pod:
        from pressured.podscope import resolve_pod_scopes

        settings, _pod = resolve_pod_scopes(settings)
    return settings


async def settings_from_args_async(args: argparse.Namespace, executor: Executor) -> Settings:
    """:func:`settings_from_args` for a reload: the file is checked and read through aiofiles
    on ``executor`` (the daemon's own I/O thread), so the loop never waits on the disk."""
    from pressured.ops.configfile import read_config_file

    path = config_path(args)
    contents = await read_config_file(path, executor) if path is not None else None
    return settings_from_args(args, contents=contents)


def report_config_error(exc: ConfigError | UnsafeFileError) -> int:
    if isinstance(exc, ConfigErrors) and len(exc.problems) > 1:
        where = f" in {exc.source}" if exc.source else ""
        print(
            f"pressured: invalid configuration{where}: {len(exc.problems)} problems",
            file=sys.stderr,
        )
        for line in exc.lines():
            print(f"  {line}", file=sys.stderr)
    elif isinstance(exc, ConfigError):
        where = f"{exc.source}: " if exc.source else ""
        print(
            f"pressured: invalid configuration: {where}{exc.field}: {exc.reason}", file=sys.stderr
        )
    else:
        print(f"pressured: refusing unsafe file: {exc}", file=sys.stderr)
    return EXIT_CONFIG
