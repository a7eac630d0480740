"""``pressured check``: validate a configuration and print the effective one."""

from __future__ import annotations

import argparse
import json

from pressured.cli.common import add_config_arguments, report_config_error, settings_from_args
from pressured.config import dump_settings
from pressured.errors import ConfigError, UnsafeFileError
from pressured.kernel import psi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--no-policies",
        action="store_true",
        help="skip loading the policies (check the file's shape only)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        if not args.no_policies:
            from pressured.policies.chain import PolicyChain

            for index, scope in enumerate(settings.scopes):
                PolicyChain.from_settings(scope.policies, f"scopes.{index}.policies")
    except (ConfigError, UnsafeFileError) as exc:
        return report_config_error(exc)
    effective = dump_settings(settings)
    privileged = psi.may_use_fast_windows(settings.daemon.proc_root)
    for scope_data, scope in zip(effective["scopes"], settings.scopes, strict=True):
        for level_data, level in zip(scope_data["levels"], scope.levels, strict=True):
            spec, adjustment = psi.legalize(level.trigger(), privileged=privileged)
            level_data["effective"] = str(spec)
            if adjustment is not None:
                level_data["adjusted_because"] = adjustment.reason
    print(json.dumps(effective, indent=2))
    return 0
