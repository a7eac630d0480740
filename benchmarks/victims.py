"""Victim choice: every scenario of ``pressured.testing.culprits`` against every built-in
policy alone, the default chain, and the old default (``oom_score`` with name protection and
single-process kills), on the real kernel.

For each (scenario, policy) a fresh scratch group gets its bystanders, a ``pressured run``
daemon watching only that group with only that policy, then the culprit. The run ends at
relief (every thrashing culprit process is gone) or at the timeout. A cell says whether the
first kill hit the cause and no bystander died (``right``), how many kills it took until
relief, and onset -> relief seconds (onset: the culprit is in place and thrashing); a note
counts culprits left alive, such as a forking hog's sleeping parent.

Run: ``python -m benchmarks.victims`` (root, cgroup2 and PSI needed). ``--timeout`` caps each
run; ``--scenarios`` / ``--policies`` narrow the table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from benchmarks.common import Config, Progress, Section, Table, Target, load_average
from benchmarks.report import text_table

DEFAULT = "default chain"
OLD_DEFAULT = "old default"
OLD_PROTECT_NAMES = '["sshd", "systemd", "init", "pressured", "containerd", "dockerd", "kubelet"]'
POLICIES = (
    DEFAULT,
    OLD_DEFAULT,
    "oom_score",
    "largest",
    "adj_tiers",
    "swap_usage",
    "cgroup_size_growth",
    "cgroup_pressure",
)


@dataclass
class Outcome:
    scenario: str
    policy: str
    right: bool
    kills: int
    bystanders_killed: int
    relief_s: float | None
    """Onset -> every thrashing culprit gone; None when that did not happen in time."""
    first_target: str | None
    decision_ms: list[float] = field(default_factory=list)
    """event -> decision of each kill (the first includes the culprit's 100 ms resample)."""
    note: str = ""
    skipped: bool = False
    """Not run at all (``note`` says why): neither right nor wrong."""

    def cell(self) -> str:
        if self.skipped:
            return f"not run [{self.note}]"
        verdict = "right" if self.right else "WRONG"
        kills = f"{self.kills} kill{'s' if self.kills != 1 else ''}"
        if self.bystanders_killed:
            kills += (
                f" ({self.bystanders_killed} bystander{'s' if self.bystanders_killed > 1 else ''})"
            )
        relief = f"{self.relief_s:.1f} s" if self.relief_s is not None else "no relief"
        text = f"{verdict}, {kills}, {relief}"
        return f"{text} [{self.note}]" if self.note else text


def _policies_toml(policy: str) -> tuple[str, str, str]:
    """(policies, extra guard, extra kill) TOML for one column."""
    if policy == DEFAULT:
        return "", "", ""
    if policy == OLD_DEFAULT:
        # The defaults before protection by identity, culprit and family kills.
        guard = f"protect_names = {OLD_PROTECT_NAMES}\nprotect_cgroups = []\n"
        return '[[scopes.policies]]\nname = "oom_score"\n', guard, "family = false\n"
    return f'[[scopes.policies]]\nname = "{policy}"\n', "", ""


def run_one(scenario_name: str, policy: str, thrash_file: str, timeout_s: float) -> Outcome:
    from pressured.testing.culprits import alive, by_name, staged_group
    from pressured.testing.daemon import Daemon, scope_config, write_config

    scenario = by_name(scenario_name)
    policies, guard, kill = _policies_toml(policy)
    with TemporaryDirectory() as tmp, staged_group(scenario) as (group, bystanders):
        config = write_config(
            Path(tmp) / "p.toml",
            scope_config(
                group.path,
                group.memcg_path,
                policies=policies,
                extra_guard=guard,
                extra_kill=kill,
            ),
        )
        with Daemon(config) as daemon:
            daemon.wait_for("controller.ready", 30)
            staged = scenario.culprit(group, thrash_file)
            onset = time.monotonic()
            relief: float | None = None
            thrashers = staged.thrashers or staged.culprits
            while time.monotonic() - onset < timeout_s:
                if not any(alive(pid) for pid in thrashers):
                    relief = time.monotonic() - onset
                    break
                time.sleep(0.1)
            if relief is not None:
                # The kill record is emitted once the victim (and its family) is confirmed
                # dead, which may come just after the thrashers vanished.
                with contextlib.suppress(TimeoutError):
                    daemon.wait_for("victim.killed", 10)
                time.sleep(1.0)
            kills = daemon.events("victim.killed")
            daemon.stop()
        survivors = [pid for pid in staged.culprits if alive(pid)]
        dead = [label for label, pid in bystanders.items() if not alive(pid)]
        culprit_targets = {f"pid {pid}" for pid in staged.culprits}
        if staged.culprit_group is not None:
            culprit_targets.add(f"cgroup {staged.culprit_group}")
        first = kills[0] if kills else None
        first_target = None
        if first is not None:
            first_target = (
                f"cgroup {first['cgroup']}" if first["kind"] == "cgroup" else f"pid {first['pid']}"
            )
        return Outcome(
            scenario=scenario_name,
            policy=policy,
            right=first_target in culprit_targets and not dead and relief is not None,
            kills=len(kills),
            bystanders_killed=len(dead),
            relief_s=relief,
            first_target=first_target,
            decision_ms=[
                float(k["event_to_decision_ms"])
                for k in kills
                if k.get("event_to_decision_ms") is not None
            ],
            note=(f"no kill in {timeout_s:g} s" if not kills and relief is None else "")
            + (f"{len(survivors)} culprit(s) left" if survivors and relief is not None else ""),
        )


def resample_cost() -> dict[str, float]:
    """What the short second sample costs beyond its 100 ms wait, over every process here."""
    from pressured.events import EventSource, PressureEvent
    from pressured.history import ProcessHistory
    from pressured.snapshot import take_snapshot

    event = PressureEvent(scope="system", level="some", source=EventSource.MANUAL)
    snapshot = take_snapshot(event, layout=None)
    history = ProcessHistory(resample_s=0.2)
    history.complete(snapshot)
    extra_ms = history.last_resample_ns / 1e6 - 200.0
    count = len(snapshot.candidates)
    return {
        "processes": count,
        "extra_ms": round(extra_ms, 2),
        "per_process_us": round(extra_ms * 1000 / max(1, count), 2),
    }


def run(
    config: Config,
    progress: Progress,
    *,
    scenarios: Sequence[str] | None = None,
    policies: Sequence[str] | None = None,
    timeout_s: float | None = None,
) -> Section:
    from pressured.kernel.procfs import read_meminfo
    from pressured.testing.culprits import SCENARIOS
    from pressured.testing.scratch import (
        drop_caches,
        make_thrash_file,
        scratch_unavailable_reason,
    )

    section = Section("victims")
    reason = scratch_unavailable_reason()
    if reason:
        section.skipped = reason
        return section
    started = time.monotonic()
    names = list(scenarios or config.victim_scenarios or [s.name for s in SCENARIOS])
    if policies is None:
        policies = (DEFAULT,) if config.smoke else POLICIES
    if timeout_s is None:
        timeout_s = config.victims_timeout_s
    has_swap = read_meminfo().get("SwapTotal", 0) > 0
    load_before = load_average()
    with TemporaryDirectory(dir="/var/tmp") as tmp:
        thrash = str(make_thrash_file(Path(tmp) / "thrash.bin", config.thrash_file_mib << 20))
        outcomes: list[Outcome] = []
        for name in names:
            for policy in policies:
                if policy == "swap_usage" and not has_swap:
                    outcomes.append(
                        Outcome(
                            name,
                            policy,
                            False,
                            0,
                            0,
                            None,
                            None,
                            note="no swap on host",
                            skipped=True,
                        )
                    )
                    continue
                drop_caches()
                progress("victims", f"{name} x {policy}")
                outcome = run_one(name, policy, thrash, timeout_s)
                progress("victims", f"  -> {outcome.cell()}")
                outcomes.append(outcome)
    table = Table(
        "victims",
        "Victim choice: right victim, kills until relief, onset -> relief",
        ["scenario", *policies],
    )
    for name in names:
        row = [name]
        for policy in policies:
            found = next(o for o in outcomes if o.scenario == name and o.policy == policy)
            row.append(found.cell())
        table.rows.append(row)
    decisions = {
        policy: [ms for o in outcomes if o.policy == policy for ms in o.decision_ms[:1]]
        for policy in policies
    }
    latency = Table(
        "victims_decision",
        "Event -> decision of the first kill (ms, median over scenarios; the default chain "
        "includes its 100 ms second sample when history is missing)",
        ["policy", "median ms", "runs"],
        [
            [policy, f"{statistics.median(values):.0f}" if values else "-", str(len(values))]
            for policy, values in decisions.items()
        ],
    )
    cost = resample_cost()
    default = [o for o in outcomes if o.policy == DEFAULT]
    clean = [o for o in default if o.right and o.kills == 1 and not o.bystanders_killed]
    section.targets.append(
        Target(
            "victims",
            "default chain: the culprit dies in one kill, no bystander dies (every scenario)",
            f"{len(clean)}/{len(default)} scenarios",
            len(clean) == len(default) if default else None,
        )
    )
    section.tables = [table, latency]
    section.notes = [
        f"load average before: {load_before}, after: {load_average()}",
        f"second sample beyond its 100 ms wait: {cost['extra_ms']} ms for "
        f"{cost['processes']} processes ({cost['per_process_us']} us each)",
        f"timeout per run {timeout_s:g} s; swap on host: {has_swap}",
    ]
    section.raw = {"outcomes": [asdict(o) for o in outcomes], "resample": cost}
    section.duration_s = time.monotonic() - started
    return section


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.victims")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--scenarios", default="", help="comma-separated scenario names")
    parser.add_argument("--policies", default="", help="comma-separated column names")
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s] or None
    policies = [p for p in args.policies.split(",") if p] or list(POLICIES)
    section = run(
        Config(), Progress(), scenarios=scenarios, policies=policies, timeout_s=args.timeout
    )
    if section.skipped:
        print(f"skipped: {section.skipped}")
        return 1
    for table in section.tables:
        print(text_table(table))
        print()
    for note in section.notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
