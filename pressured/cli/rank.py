"""``pressured rank``: what each scope's policy chain would kill now, killing nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from pressured.cli.common import add_config_arguments, report_config_error, settings_from_args
from pressured.config import Settings
from pressured.errors import ConfigError, UnsafeFileError
from pressured.events import SYSTEM_SCOPE, EventSource, PressureEvent
from pressured.guard import Guard
from pressured.kernel import cgroupfs
from pressured.kernel.memcg_v1 import resolve_memory_source
from pressured.policies.chain import PolicyChain
from pressured.snapshot import take_snapshot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, daemon_flags=False)
    parser.add_argument("--level", default="some", help="pressure level to pretend (default some)")
    parser.add_argument("-n", "--top", type=int, default=10, help="candidates to show")
    parser.add_argument("--json", action="store_true", help="print JSON")


async def _rank(settings: Settings, level: str, top: int) -> list[dict[str, Any]]:
    layout = cgroupfs.discover_layout(settings.daemon.proc_root)
    self_cgroup = cgroupfs.own_cgroup()
    out = []
    for index, scope in enumerate(settings.scopes):
        chain = PolicyChain.from_settings(scope.policies, f"scopes.{index}.policies")
        guard = Guard(settings.guard, self_cgroup=self_cgroup, layout=layout)
        event = PressureEvent(
            scope=scope.cgroup or SYSTEM_SCOPE, level=level, source=EventSource.MANUAL
        )
        memcg_v1, memory_source = scope.memcg_v1, {"source": "system"}
        if scope.cgroup is not None:
            group = cgroupfs.Cgroup(layout, scope.cgroup, scope.memcg_v1)
            memory_source = resolve_memory_source(group)
            memcg_v1 = group.memcg_v1_path
        snapshot = take_snapshot(
            event,
            layout=layout,
            proc_root=settings.daemon.proc_root,
            cgroup_path=scope.cgroup,
            memcg_v1_path=memcg_v1,
            read_scope_pressure=True,
            protection=guard.process_protection,
        )
        result = await chain.decide(snapshot, guard.check)
        ranked = sorted(
            (p for p in snapshot.processes if not p.is_kernel_thread),
            key=lambda p: (p.oom_score, p.memory_bytes),
            reverse=True,
        )
        out.append(
            {
                "scope": event.scope,
                "memory_source": memory_source,
                "policy": result.decision.policy,
                "decision": result.decision.reason,
                "would_kill": [v.describe() for v in result.decision.victims],
                "ranking": [list(item) for item in result.decision.ranking],
                "rejected": [
                    {"policy": p, "victim": v.describe(), "why": why}
                    for p, v, why in result.rejected
                ],
                "failures": [f"{f.policy}: {f.kind}: {f.detail}" for f in result.failures],
                "candidates": [
                    {
                        "pid": p.pid,
                        "comm": p.comm,
                        "oom_score": p.oom_score,
                        "oom_score_adj": p.oom_score_adj,
                        "rss_mib": round(p.rss_bytes / 2**20, 1),
                        "swap_mib": round(p.swap_bytes / 2**20, 1),
                        "protected": guard.process_protection(p) or "",
                    }
                    for p in ranked[:top]
                ],
            }
        )
        await chain.aclose()
    return out


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        report = asyncio.run(_rank(settings, args.level, args.top))
    except (ConfigError, UnsafeFileError) as exc:
        return report_config_error(exc)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for scope in report:
        verdict = ", ".join(scope["would_kill"]) or "nothing"
        print(f"scope {scope['scope']}: would kill {verdict} ({scope['decision']})")
        for line in scope["failures"]:
            print(f"  policy failure: {line}", file=sys.stderr)
        print(
            f"  {'PID':>7} {'COMM':<16} {'SCORE':>5} {'ADJ':>5} {'RSS MiB':>9} "
            f"{'SWAP MiB':>9}  PROTECTED"
        )
        for c in scope["candidates"]:
            print(
                f"  {c['pid']:>7} {c['comm'][:16]:<16} {c['oom_score']:>5} "
                f"{c['oom_score_adj']:>5} {c['rss_mib']:>9} {c['swap_mib']:>9}  "
                f"{c['protected']}"
            )
    return 0
