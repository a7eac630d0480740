"""The fast path (skim everyone, full records for finalists) chooses what the full scan
chooses: same victim, same ranking evidence, for every built-in policy.

Real processes in a scratch cgroup, and generated /proc trees with hundreds of processes of
random sizes, adjs, names and swap.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pressured.events import EventSource, PressureEvent
from pressured.kernel import procfs
from pressured.policies.adj_tiers import AdjTiersOptions, AdjTiersPolicy
from pressured.policies.base import BasePolicy, Decision
from pressured.policies.cgroup_pressure import CgroupPressureOptions, CgroupPressurePolicy
from pressured.policies.cgroup_size_growth import CgroupSizeGrowthOptions, CgroupSizeGrowthPolicy
from pressured.policies.largest import LargestOptions, LargestPolicy
from pressured.policies.oom_score import OomScoreOptions, OomScorePolicy
from pressured.policies.swap_usage import SwapUsageOptions, SwapUsagePolicy
from pressured.scan.cmdline import CmdlineReader
from pressured.scan.kept import KeptSkims
from pressured.scan.plan import plan_for
from pressured.snapshot import Snapshot, take_snapshot
from pressured.testing.scratch import ScratchGroup
from tests.conftest import kernel_skip_reason

EVENT = PressureEvent(scope="test", level="some", source=EventSource.MANUAL)

# Allocate MiB, set adj and name, say ready, sleep.
HOLDER = """
import ctypes, sys, time
mib, adj, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
block = bytearray(mib << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
open("/proc/self/oom_score_adj", "w").write(adj)
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)
print("ready", flush=True)
time.sleep(600)
"""
# (MiB, oom_score_adj, name): ties, a -1000, an adj 1000 small one, a negative adj big one.
HOLDERS = [
    (60, "-1000", "keeper"),
    (50, "-500", "database"),
    (40, "0", "builder"),
    (40, "0", "builder"),
    (30, "300", "indexer"),
    (20, "0", "cache"),
    (8, "1000", "expendable"),
    (4, "0", "helper"),
    (2, "500", "helper"),
]
SLEEPS = 12


def policies() -> list[tuple[str, BasePolicy[Any]]]:
    """Every built-in process policy, with options that move the victim around."""
    return [
        ("largest", LargestPolicy(LargestOptions())),
        ("largest ignore", LargestPolicy(LargestOptions.model_validate({"ignore": ["builder"]}))),
        ("largest min", LargestPolicy(LargestOptions(min_mib=45))),
        ("oom_score", OomScorePolicy(OomScoreOptions())),
        ("oom_score rss", OomScorePolicy(OomScoreOptions(sort_by="rss"))),
        (
            "oom_score patterns",
            OomScorePolicy(
                OomScoreOptions.model_validate(
                    {"prefer": ["helper"], "avoid": ["expendable"], "ignore": ["indexer"]}
                )
            ),
        ),
        (
            "oom_score rss patterns",
            OomScorePolicy(OomScoreOptions.model_validate({"sort_by": "rss", "prefer": ["cache"]})),
        ),
        ("oom_score min", OomScorePolicy(OomScoreOptions(min_rss_mib=30))),
        ("adj_tiers", AdjTiersPolicy(AdjTiersOptions())),
        ("swap_usage", SwapUsagePolicy(SwapUsageOptions(max_swap_free_percent=100))),
        ("cgroup_size_growth", CgroupSizeGrowthPolicy(CgroupSizeGrowthOptions())),
        ("cgroup_pressure", CgroupPressurePolicy(CgroupPressureOptions())),
    ]


def choice(decision: Decision) -> tuple[object, ...]:
    """The victim exactly, and the ranking evidence's scores (which of several processes
    tied with its last entry it names is not part of the promise)."""
    victim = decision.victims[0] if decision.victims else None
    return (
        None if victim is None else (victim.kind, victim.pid, victim.start_time, victim.cgroup),
        decision.ranking[:1],
        [score for _label, score in decision.ranking],
        decision.reason if victim is None else None,
    )


def decide(policy: BasePolicy[Any], snapshot: Snapshot) -> Decision:
    return asyncio.run(policy(snapshot))


@pytest.fixture(scope="module")
def populated() -> Iterator[ScratchGroup]:
    """A scratch group holding the holders above and a dozen small sleepers."""
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(f"real-kernel test: {reason}")
    with ScratchGroup(None) as group:
        for mib, adj, name in HOLDERS:
            proc = group.spawn([sys.executable, "-c", HOLDER, str(mib), adj, name])
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith(b"ready")
        sleeps = [group.spawn(["sleep", "600"], stdout=subprocess.DEVNULL) for _ in range(SLEEPS)]
        deadline = time.monotonic() + 30
        # Wait until every sleeper has joined and exec'd, so both scans see the same world.
        while not all(asleep(proc.pid) for proc in sleeps):
            assert time.monotonic() < deadline, "sleepers did not start"
            time.sleep(0.01)
        yield group


def asleep(pid: int) -> bool:
    """In nanosleep: exec'd and its loader done, so its figures no longer move."""
    try:
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("label", [label for label, _ in policies()])
def test_fast_scan_chooses_the_full_scans_victim_on_real_processes(
    populated: ScratchGroup, label: str
) -> None:
    """Same victim and ranking from the two-phase scan as from reading everyone."""
    policy = dict(policies())[label]
    common: dict[str, Any] = {
        "layout": populated.layout,
        "cgroup_path": populated.path,
        "memcg_v1_path": populated.memcg_path,
    }
    full = take_snapshot(EVENT, **common)
    fast = take_snapshot(EVENT, **common, plan=plan_for([policy]), cmdlines=CmdlineReader())
    assert full.complete and fast.complete
    assert len(full.processes) == len(HOLDERS) + SLEEPS
    assert choice(decide(policy, fast)) == choice(decide(policy, full))
    if label in ("largest", "largest ignore", "largest min", "oom_score"):
        # Not vacuous: the fast path really left most full records unread.
        assert len(fast.processes) < len(full.processes)
        assert fast.skimmed == len(full.processes)


# -- generated /proc trees ---------------------------------------------------------------
STAT_TAIL = " ".join(["0"] * 28)
NAMES = ["web", "db", "cache", "helper", "batch", "expendable", "indexer", "builder"]


def write_process(root: Path, pid: int, rng: random.Random, swap_pool: int) -> int:
    rss_pages = rng.choice([0, 1, 2, rng.randrange(1, 50_000), rng.randrange(1, 500)])
    swap_kib = rng.choice([0, 0, rng.randrange(0, max(1, swap_pool))])
    adj = rng.choice([-1000, -500, 0, 0, 0, 300, 1000])
    comm = rng.choice(NAMES)
    uid = rng.choice([0, 1000])
    state = rng.choice(["S", "S", "S", "R", "Z"])
    flags = 0x00200000 if rng.random() < 0.03 else 0x400100
    base = root / str(pid)
    base.mkdir()
    start = rng.randrange(1000, 2000)  # ties in start time are possible, as PIDs break them
    (base / "stat").write_text(
        f"{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 {flags} 10 0 0 0 5 6 0 0 20 0 1 0 "
        f"{start} 1000000 {rss_pages} {STAT_TAIL}\n"
    )
    (base / "statm").write_text(f"9999 {rss_pages} 10 1 0 5 0\n")
    (base / "status").write_text(
        f"Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nVmSwap:\t{swap_kib} kB\n"
    )
    # The kernel's scale (proc_oom_score): size as a share of memory, plus adj, into 0..2000.
    points = (rss_pages + swap_kib // 4) * 1000 // 60_000 + adj
    badness = max(0, (1000 + points) * 2 // 3)
    (base / "oom_score").write_text(f"{0 if adj == -1000 else badness}\n")
    (base / "oom_score_adj").write_text(f"{adj}\n")
    (base / "cmdline").write_bytes(f"/usr/bin/{comm}\0--id={pid}\0".encode())
    (base / "cgroup").write_text(f"0::/work/{comm}\n")
    return swap_kib


def generated_tree(root: Path, seed: int, processes: int) -> None:
    rng = random.Random(seed)
    swap_pool = rng.choice([0, 0, 4096, 400_000])
    used = max(
        (write_process(root, 100 + index, rng, swap_pool) for index in range(processes)),
        default=0,
    )
    swap_total = 8 * 2**20
    (root / "meminfo").write_text(
        f"MemTotal: 16000000 kB\nMemAvailable: 100000 kB\nSwapTotal: {swap_total} kB\n"
        f"SwapFree: {swap_total - used - rng.randrange(0, 2048)} kB\n"
    )


@pytest.mark.parametrize("kept", [False, True], ids=["fresh-opens", "kept-fds"])
@pytest.mark.parametrize("native", [False, True], ids=["python-skim", "native-skim"])
@pytest.mark.parametrize("seed", range(12))
def test_fast_scan_chooses_the_full_scans_victim_on_generated_trees(
    tmp_path: Path, seed: int, native: bool, kept: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random trees of 300 processes: every built-in policy decides the same both ways."""
    from pressured.scan import skim

    if native and not skim.NATIVE_AVAILABLE:
        pytest.skip("the optional native skim extension is not built here")
    monkeypatch.setattr(skim, "NATIVE_AVAILABLE", native)
    generated_tree(tmp_path, seed, 300)
    full = take_snapshot(EVENT, layout=None, proc_root=str(tmp_path))
    assert len(full.processes) == 300
    skims = KeptSkims(str(tmp_path)) if kept else None
    for label, policy in policies():
        fast = take_snapshot(
            EVENT,
            layout=None,
            proc_root=str(tmp_path),
            plan=plan_for([policy]),
            cmdlines=CmdlineReader(proc_root=str(tmp_path)),
            kept=skims,
        )
        assert choice(decide(policy, fast)) == choice(decide(policy, full)), label
    if skims is not None:
        skims.close()


def test_chain_plan_serves_every_policy_of_the_chain(tmp_path: Path) -> None:
    """One snapshot planned for a chain gives each of its policies the full scan's answer."""
    generated_tree(tmp_path, 99, 400)
    chain: list[BasePolicy[Any]] = [
        OomScorePolicy(OomScoreOptions()),
        LargestPolicy(LargestOptions(min_mib=1)),
    ]
    plan = plan_for(chain)
    assert plan is not None and len(plan.keys) == 2
    full = take_snapshot(EVENT, layout=None, proc_root=str(tmp_path))
    fast = take_snapshot(EVENT, layout=None, proc_root=str(tmp_path), plan=plan)
    assert len(fast.processes) < len(full.processes)
    for policy in chain:
        assert choice(decide(policy, fast)) == choice(decide(policy, full))


def test_a_policy_without_a_scan_key_gets_a_full_scan() -> None:
    """Plugins that say nothing about their ranking, and adj_tiers, are given everyone."""

    class Plugin:
        name = "plugin"

    assert plan_for([Plugin()]) is None
    assert plan_for([AdjTiersPolicy(AdjTiersOptions()), LargestPolicy(LargestOptions())]) is None
    assert procfs.SKIM_FILES  # the skim reads only the files documented there
