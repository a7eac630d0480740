"""``pressured check``: validate a configuration and print the effective one.

``--schema`` prints the configuration's JSON schema and ``--reference`` the Markdown reference
(docs/configuration.md), both generated from the models.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from pressured.cli.common import (
    add_config_arguments,
    config_path,
    report_config_error,
    settings_from_args,
)
from pressured.config import Settings, dump_settings
from pressured.errors import ConfigError, KernelError, UnsafeFileError
from pressured.kernel import cgroupfs, psi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--no-policies",
        action="store_true",
        help="skip loading the policies (check the file's shape only)",
    )
    parser.add_argument(
        "--schema", action="store_true", help="print the configuration's JSON schema and exit"
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="print the configuration reference (docs/configuration.md) and exit",
    )


def run(args: argparse.Namespace) -> int:
    if args.schema or args.reference:
        from pressured.cli import reference

        if args.schema:
            print(json.dumps(reference.json_schema(), indent=2))
        else:
            print(reference.render_markdown(), end="")
        return 0
    try:
        settings = settings_from_args(args, resolve_pod=False)
        check_hooks(settings, config_path(args))
        if not args.no_policies:
            check_policies(settings, config_path(args))
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
    for scope_data, where in zip(effective["scopes"], scope_sources(settings), strict=True):
        scope_data["on_this_host"] = where
    print(json.dumps(effective, indent=2))
    return 0


def check_policies(settings: Settings, source: str | None = None) -> None:
    """Load every scope's policy chain; raise one ConfigErrors with every scope's problem."""
    from pressured.config import ConfigErrors
    from pressured.policies.chain import PolicyChain

    problems: list[tuple[str, str]] = []
    for index, scope in enumerate(settings.scopes):
        try:
            PolicyChain.from_settings(scope.policies, f"scopes.{index}.policies")
        except ConfigErrors as exc:
            problems.extend(exc.problems)
        except ConfigError as exc:
            problems.append((exc.field, exc.reason))
    if problems:
        raise ConfigErrors(problems, source)


def check_hooks(settings: Settings, source: str | None = None) -> None:
    """Check every hook as the daemon will before arming (a program that exists, is
    executable and only root can change; an http:// URL); raise one ConfigErrors with all."""
    from pressured.config import ConfigErrors
    from pressured.ops.hooks import build_hook

    problems: list[tuple[str, str]] = []
    for stage, hooks in (
        ("pre_kill", settings.hooks.pre_kill),
        ("post_kill", settings.hooks.post_kill),
    ):
        for index, hook in enumerate(hooks):
            try:
                build_hook(f"hooks.{stage}.{index}", hook)
            except ConfigError as exc:
                problems.append((exc.field, exc.reason))
    if problems:
        raise ConfigErrors(problems, source)


def scope_sources(settings: Settings) -> list[dict[str, Any]]:
    """For each scope, what it means on this host: the group (a ``pod`` scope resolved), and
    where its memory figures come from. Facts, not errors: a file is often checked elsewhere
    than where it runs."""
    from pressured.kernel.memcg_v1 import resolve_memory_source
    from pressured.podscope import POD_KEYWORD, find_pod_group

    proc_root = settings.daemon.proc_root
    try:
        layout: cgroupfs.CgroupLayout | None = cgroupfs.discover_layout(proc_root)
    except OSError:
        layout = None
    out: list[dict[str, Any]] = []
    for scope in settings.scopes:
        if scope.cgroup is None:
            out.append({"memory": {"source": "system", "path": f"{proc_root}/meminfo"}})
            continue
        if layout is None or layout.unified is None:
            out.append({"problem": "no cgroup2 hierarchy is mounted here"})
            continue
        path = scope.cgroup
        info: dict[str, Any] = {}
        if path == POD_KEYWORD:
            try:
                pod = find_pod_group(layout, proc_root)
            except (KernelError, OSError) as exc:
                out.append({"problem": f"'pod' cannot be found here: {exc}"})
                continue
            path = pod.path
            info["pod"] = {"cgroup": pod.path, "how": pod.how}
        group = cgroupfs.Cgroup(layout, path, scope.memcg_v1)
        if not group.exists():
            info["problem"] = f"{group.directory} does not exist here"
        else:
            info["memory"] = resolve_memory_source(group)
        out.append(info)
    return out
