"""The family fast path (one stat skim for everyone, full records for the top families)
chooses what the full scan chooses for ``culprit`` and for the whole default chain: same
victim, same family, same kind of kill.

Generated /proc trees (families, faults, growth, protection, swap, PID reuse) and real
processes in a scratch cgroup (a faulting family, a large idle one, a grower).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pressured.config import PolicySettings
from pressured.events import EventSource, PressureEvent
from pressured.history import ProcessHistory
from pressured.kernel import procfs
from pressured.policies import culprit as culprit_module
from pressured.policies.base import Decision
from pressured.policies.chain import PolicyChain
from pressured.policies.culprit import CulpritOptions, CulpritPolicy
from pressured.policies.oom_score import OomScoreOptions, OomScorePolicy
from pressured.scan import kept as kept_module
from pressured.scan import skim
from pressured.scan.cmdline import CmdlineReader
from pressured.scan.families import stat_families
from pressured.scan.kept import KeptSkims, prewarm_scope
from pressured.scan.plan import FamilyKey, ScanPlan, plan_for
from pressured.snapshot import Snapshot, take_snapshot
from pressured.testing.scratch import ScratchGroup
from tests.conftest import kernel_skip_reason

EVENT = PressureEvent(scope="test", level="some", source=EventSource.MANUAL)
DEFAULT_CHAIN = (PolicySettings(name="culprit"), PolicySettings(name="oom_score"))


def culprits() -> list[tuple[str, CulpritPolicy]]:
    return [
        ("culprit", CulpritPolicy(CulpritOptions())),
        ("culprit singles", CulpritPolicy(CulpritOptions(families=False))),
        ("culprit ignore", CulpritPolicy(CulpritOptions.model_validate({"ignore": ["indexer"]}))),
        ("culprit by size", CulpritPolicy(CulpritOptions(min_demand_mib_per_s=10**9))),
    ]


def choice(decision: Decision) -> tuple[Any, ...]:
    """The victim (its family in any order), the rule that chose it, its family's size, and
    which families the ranking names in which order (their rates are measured over each
    path's own interval)."""
    victim = decision.victims[0] if decision.victims else None
    if victim is None:
        return (None, decision.reason)
    return (
        (victim.kind, victim.pid, victim.start_time, victim.cgroup, sorted(victim.family)),
        victim.figures.get("rule"),
        victim.figures.get("members"),
        [label for label, _score in decision.ranking],
    )


def decide(policy: CulpritPolicy | OomScorePolicy, snapshot: Snapshot) -> Decision:
    return asyncio.run(policy(snapshot))


def chain_choice(snapshot: Snapshot) -> tuple[str, tuple[Any, ...]]:
    """The default chain's decision, family expansion included."""
    chain = PolicyChain.from_settings(DEFAULT_CHAIN, "policies")
    result = asyncio.run(chain.decide(snapshot))
    return (result.decision.policy, choice(result.decision))


# -- generated /proc trees ---------------------------------------------------------------
NAMES = ["web", "db", "cache", "helper", "batch", "indexer", "builder"]
STAT_TAIL = " ".join(["0"] * 28)


class FakeProcess:
    """One generated process; its stat is written twice (before and after the interval)."""

    def __init__(self, pid: int, rng: random.Random, parents: list[FakeProcess], swap: int):
        parent = rng.choice(parents) if parents and rng.random() < 0.7 else None
        self.pid = pid
        self.ppid = parent.pid if parent else 1
        self.pgid: int = parent.pgid if parent and rng.random() < 0.85 else pid
        if parents and rng.random() < 0.1:
            # In another process's group without being its child: an orphan reparented to
            # PID 1 (no parent here), or a pipeline's later command (the shell's child):
            # adopted by that group's leader (pressured.family).
            self.pgid = rng.choice(parents).pgid
        self.comm = rng.choice(NAMES)
        self.state = rng.choice(["S"] * 12 + ["R", "Z"])
        self.flags = 0x00200000 if rng.random() < 0.02 else 0x400100
        self.start = rng.randrange(1000, 2000)
        self.rss = rng.choice([0, 1, rng.randrange(1, 500), rng.randrange(1, 40_000)])
        self.minflt = rng.randrange(0, 10**6)
        self.majflt = rng.randrange(0, 1000)
        self.swap_kib = rng.choice([0, 0, 0, rng.randrange(0, max(1, swap))])
        self.adj = rng.choice([-1000, 0, 0, 0, 0, 300])
        self.uid = rng.choice([0, 1000])

    def write(self, root: Path) -> None:
        base = root / str(self.pid)
        base.mkdir(exist_ok=True)
        (base / "stat").write_text(
            f"{self.pid} ({self.comm}) {self.state} {self.ppid} {self.pgid} {self.pgid} 0 -1 "
            f"{self.flags} {self.minflt} 0 {self.majflt} 0 5 6 0 0 20 0 1 0 {self.start} "
            f"1000000 {self.rss} {STAT_TAIL}\n"
        )
        (base / "statm").write_text(f"9999 {self.rss} 10 1 0 5 0\n")
        (base / "status").write_text(
            f"Name:\t{self.comm}\nUid:\t{self.uid}\t{self.uid}\t{self.uid}\t{self.uid}\n"
            f"VmSwap:\t{self.swap_kib} kB\n"
        )
        points = (self.rss + self.swap_kib // 4) * 1000 // 60_000 + self.adj
        badness = 0 if self.adj == -1000 else max(0, (1000 + points) * 2 // 3)
        (base / "oom_score").write_text(f"{badness}\n")
        (base / "oom_score_adj").write_text(f"{self.adj}\n")
        (base / "cmdline").write_bytes(f"/usr/bin/{self.comm}\0--id={self.pid}\0".encode())
        (base / "cgroup").write_text(f"0::/work/{self.comm}\n")

    def live(self, rng: random.Random, busy: bool) -> None:
        """What it did during the interval: most nothing, a few fault or grow, one or two
        exit and have their PID reused by a new process."""
        if rng.random() < 0.03:
            # A new process with the old PID, born within the interval: its faults since
            # birth count, its size does not count as growth.
            self.start = procfs.start_ticks_at(time.monotonic_ns()) + rng.randrange(1, 50)
            self.minflt, self.majflt = rng.randrange(0, 300_000), 0
        if busy and rng.random() < 0.15:
            self.minflt += rng.choice([1, 50, rng.randrange(1, 200_000)])
            self.majflt += rng.choice([0, 0, rng.randrange(0, 2000)])
        if busy and rng.random() < 0.1:
            self.rss = max(0, self.rss + rng.randrange(-5000, 20_000))


def write_meminfo(root: Path, processes: list[FakeProcess], rng: random.Random) -> None:
    used = max((p.swap_kib for p in processes), default=0) + rng.randrange(0, 2048)
    total = 8 * 2**20
    (root / "meminfo").write_text(
        f"MemTotal: 16000000 kB\nMemAvailable: 100000 kB\nSwapTotal: {total} kB\n"
        f"SwapFree: {total - used} kB\n"
    )


def generated(root: Path, seed: int, count: int) -> tuple[list[FakeProcess], random.Random]:
    rng = random.Random(seed)
    swap = rng.choice([0, 0, 0, 4096])
    processes: list[FakeProcess] = []
    for index in range(count):
        processes.append(FakeProcess(100 + index, rng, processes, swap))
    for process in processes:
        process.write(root)
    write_meminfo(root, processes, rng)
    return processes, rng


@pytest.fixture
def tiny_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rates over the microseconds between two writes of a fake tree: the fast path's
    shortest usable interval becomes 1 ns (the full path's history is made with the same)."""
    monkeypatch.setattr(culprit_module, "MIN_INTERVAL_S", 1e-9)


@pytest.mark.usefixtures("tiny_interval")
@pytest.mark.parametrize("native", [False, True], ids=["python-skim", "native-skim"])
@pytest.mark.parametrize("seed", range(16))
def test_family_fast_path_chooses_the_full_scans_victim_on_generated_trees(
    tmp_path: Path, seed: int, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random trees of 300 processes in families: culprit (four ways) and the default chain
    decide the same from the fast path as from a full scan, over the same interval."""
    if native and not skim.NATIVE_AVAILABLE:
        pytest.skip("the optional native skim extension is not built here")
    monkeypatch.setattr(skim, "NATIVE_AVAILABLE", native)
    root = str(tmp_path)
    processes, rng = generated(tmp_path, seed, 300)
    busy = seed % 4 != 0  # every fourth tree stays quiet: the size rule decides
    with both_ways(root) as (history, planned):
        for process in processes:
            process.live(rng, busy)
            process.write(tmp_path)
        full = history.complete(take_snapshot(EVENT, layout=None, proc_root=root))
        assert full.previous or not busy
        for label, policy, plan, kept in planned:
            fast = fast_snapshot(root, plan, kept)
            assert fast.rates_sampled and not fast.full_scan
            if policy is None:
                assert chain_choice(fast) == chain_choice(full)
                # The chain's safety net, asked alone: its finalists are in the snapshot too
                # (ties on oom_score told apart by the stat skim, not all read).
                safety_net = OomScorePolicy(OomScoreOptions())
                assert choice(decide(safety_net, fast)) == choice(decide(safety_net, full))
            else:
                assert choice(decide(policy, fast)) == choice(decide(policy, full)), label
            if busy and label == "culprit":
                # Not vacuous: the fast path left most full records unread.
                assert len(fast.processes) < len(full.processes) // 2


Planned = list[tuple[str, CulpritPolicy | None, ScanPlan, KeptSkims]]


def fast_snapshot(root: str, plan: ScanPlan, kept: KeptSkims, **extra: Any) -> Snapshot:
    """A planned scan of a generated tree against its kept files."""
    return take_snapshot(
        EVENT,
        layout=None,
        proc_root=root,
        plan=plan,
        cmdlines=CmdlineReader(proc_root=root),
        kept=kept,
        **extra,
    )


@contextlib.contextmanager
def both_ways(root: str) -> Iterator[tuple[ProcessHistory, Planned]]:
    """The earlier reading of a generated tree taken both ways: the full path's history
    remembers a full scan, and each culprit variant and the default chain (policy None) gets
    its plan and its own kept files with their stat skim (as at arm time or at the previous
    event: each scan leaves its own reading behind, which the next scan of the same kept
    files would take its rates against). The kept files are closed after."""
    history = ProcessHistory(resample_s=0, min_interval_s=1e-9)
    history.complete(take_snapshot(EVENT, layout=None, proc_root=root))
    chain = PolicyChain.from_settings(DEFAULT_CHAIN, "policies")
    policies: list[tuple[str, CulpritPolicy | None, ScanPlan | None]] = [
        *((label, policy, plan_for([policy])) for label, policy in culprits()),
        ("default chain", None, plan_for(link.policy for link in chain.links)),
    ]
    planned: Planned = []
    try:
        for label, policy, plan in policies:
            assert plan is not None
            planned.append((label, policy, plan, KeptSkims(root)))
            prewarm_scope(planned[-1][3], ("stat",), None, root)
        yield history, planned
    finally:
        for *_rest, kept in planned:
            kept.close()


def test_stat_families_follow_parents_within_a_process_group() -> None:
    """A child in its parent's group joins the parent; one that left the group (its own job)
    starts a family; kernel threads, zombies, PID 1 and us are nobody's family."""
    line = procfs.parse_stat_line
    lines = {
        10: line(b"10 (a) S 1 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 5 0"),
        11: line(b"11 (a) S 10 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 101 0 5 0"),
        12: line(b"12 (a) S 11 10 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 102 0 5 0"),
        13: line(b"13 (job) S 10 13 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 103 0 5 0"),
        14: line(b"14 (z) Z 13 13 10 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 104 0 0 0"),
        2: line(b"2 (kthreadd) S 0 0 0 0 -1 2097216 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0 0"),
        1: line(b"1 (init) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 5 0"),
    }
    families = sorted(sorted(f) for f in stat_families(lines, self_pid=99, families=True))
    assert families == [[10, 11, 12], [13]]


# -- real processes ------------------------------------------------------------------------
FAULTER = """
import mmap, os, sys
# A parent and its forked workers (one process group) that fault all the time: each round
# maps fresh pages, touches them, and unmaps them (an explicit mmap: malloc would reuse).
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        break  # a worker
else:
    print("ready", flush=True)  # the parent, once its workers are forked
while True:
    block = mmap.mmap(-1, 8 << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    block.close()
"""
HOLDER = """
import sys, time
block = bytearray(int(sys.argv[1]) << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
print("ready", flush=True)
time.sleep(600)
"""


SLEEPERS = 40


def _ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"ready")


@pytest.fixture
def busy_scope() -> Iterator[ScratchGroup]:
    """A scratch group: a large idle holder, a faulting family of three in its own child
    group, and forty sleepers."""
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(f"real-kernel test: {reason}")
    with ScratchGroup(None) as group:
        _ready(group.spawn([sys.executable, "-c", HOLDER, "120"]))
        faulters = group.spawn([sys.executable, "-c", FAULTER, "2"], group=group.child("faulters"))
        _ready(faulters)
        sleepers = [
            group.spawn(["sleep", "600"], stdout=subprocess.DEVNULL) for _ in range(SLEEPERS)
        ]
        # Both scans must see the same world: wait until every sleeper has joined and exec'd.
        deadline = time.monotonic() + 30
        while not all(_asleep(proc.pid) for proc in sleepers):
            assert time.monotonic() < deadline, "sleepers did not settle"
            time.sleep(0.01)
        yield group


def test_default_chain_does_not_read_every_process_in_full(busy_scope: ScratchGroup) -> None:
    """The default chain (culprit, then oom_score) gets a planned scan, not a full one: full
    records only for its finalists (it was a full scan of everyone before)."""
    chain = PolicyChain.from_settings(DEFAULT_CHAIN, "policies")
    plan = plan_for(link.policy for link in chain.links)
    assert plan is not None and plan.family_keys
    snapshot = take_snapshot(
        EVENT,
        layout=busy_scope.layout,
        cgroup_path=busy_scope.path,
        memcg_v1_path=busy_scope.memcg_path,
        plan=plan,
        cmdlines=CmdlineReader(),
    )
    assert not snapshot.full_scan
    assert snapshot.skimmed == snapshot.expected_processes
    assert len(snapshot.processes) < snapshot.expected_processes // 2


def test_family_fast_path_chooses_the_full_scans_family_on_real_processes(
    busy_scope: ScratchGroup,
) -> None:
    """The faulting family dies, as one cgroup (its child group holds just it), both ways;
    the fast path read far fewer full records."""
    common: dict[str, Any] = {
        "layout": busy_scope.layout,
        "cgroup_path": busy_scope.path,
        "memcg_v1_path": busy_scope.memcg_path,
    }
    # Both paths as on an episode's first event with nothing kept: a second sample.
    full = ProcessHistory().complete(take_snapshot(EVENT, **common))
    chain = PolicyChain.from_settings(DEFAULT_CHAIN, "policies")
    plan = plan_for(link.policy for link in chain.links)
    fast = ProcessHistory().complete(
        take_snapshot(EVENT, **common, plan=plan, cmdlines=CmdlineReader())
    )
    assert fast.rates_sampled and not fast.full_scan
    policy = CulpritPolicy(CulpritOptions())
    fast_choice, full_choice = choice(decide(policy, fast)), choice(decide(policy, full))
    assert fast_choice[:3] == full_choice[:3]
    assert fast_choice[1] == "demand"
    assert chain_choice(fast)[1][0] == chain_choice(full)[1][0]
    assert chain_choice(fast)[1][0][0] == "cgroup"  # (kind, ...): the faulters' own group
    assert len(fast.processes) < len(full.processes) // 2


def test_a_shared_leaf_group_keeps_the_kill_to_the_family(busy_scope: ScratchGroup) -> None:
    """When the faulting family shares its leaf group with an outsider the fast path never
    ranked, the kill stays a process-family kill (as with a full scan), not cgroup.kill."""
    outsider = busy_scope.spawn(
        ["sleep", "600"], group=busy_scope.child("faulters"), stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{outsider.pid}/comm").read_text().startswith("sleep"):
        assert time.monotonic() < deadline, "the outsider did not exec"
        time.sleep(0.01)
    common: dict[str, Any] = {
        "layout": busy_scope.layout,
        "cgroup_path": busy_scope.path,
        "memcg_v1_path": busy_scope.memcg_path,
    }
    chain = PolicyChain.from_settings(DEFAULT_CHAIN, "policies")
    plan = plan_for(link.policy for link in chain.links)
    fast = ProcessHistory().complete(
        take_snapshot(EVENT, **common, plan=plan, cmdlines=CmdlineReader())
    )
    full = ProcessHistory().complete(take_snapshot(EVENT, **common))
    fast_kill, full_kill = chain_choice(fast)[1][0], chain_choice(full)[1][0]
    assert fast_kill == full_kill
    assert fast_kill[0] == "process" and len(fast_kill[4]) == 2  # root + its two workers


def test_a_kept_stat_reading_spares_the_first_event_its_second_sample(
    busy_scope: ScratchGroup,
) -> None:
    """With the scope's stat files read at arm time (prewarm), the first event takes its
    rates against that reading: no 200 ms second sample (it always waited before)."""
    kept = KeptSkims()
    try:
        chain = PolicyChain.from_settings(DEFAULT_CHAIN, "policies")
        plan = plan_for(link.policy for link in chain.links)
        assert plan is not None
        prewarm_scope(kept, plan.skim_files, busy_scope.group)
        armed = kept.earlier_stat(time.monotonic_ns() + 10**9, 0, 10**10)
        assert armed is not None
        # The event comes a little later (rates need at least 0.1 s between readings).
        time.sleep(0.15)
        history = ProcessHistory()
        snapshot = history.complete(
            take_snapshot(
                EVENT,
                layout=busy_scope.layout,
                cgroup_path=busy_scope.path,
                memcg_v1_path=busy_scope.memcg_path,
                plan=plan,
                cmdlines=CmdlineReader(),
                kept=kept,
            )
        )
        assert history.resamples == 0
        assert snapshot.previous
        assert {s.monotonic_ns for s in snapshot.previous.values()} == {armed.taken_ns}
        assert choice(decide(CulpritPolicy(CulpritOptions()), snapshot))[1] == "demand"
    finally:
        kept.close()


def test_kept_stat_readings_are_bounded_to_two_generations(tmp_path: Path) -> None:
    """State kept between events does not grow with the number of events."""
    processes, _rng = generated(tmp_path, 1, 50)
    kept = KeptSkims(str(tmp_path))
    try:
        for _ in range(5):
            kept.skim(str(tmp_path), [p.pid for p in processes], "stat")
        stat = kept._by_name["stat"]
        assert len(stat.generations) == kept_module.GENERATIONS == 2
    finally:
        kept.close()


@pytest.mark.parametrize("native", [False, True], ids=["python", "native"])
def test_stat_skim_reads_the_same_lines_as_the_stat_parser(
    tmp_path: Path, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Native and Python stat skims (fresh and kept) parse every line like parse_stat; a
    malformed line is a problem, a missing process is vanished."""
    if native and not skim.NATIVE_AVAILABLE:
        pytest.skip("the optional native skim extension is not built here")
    monkeypatch.setattr(skim, "NATIVE_AVAILABLE", native)
    processes, _rng = generated(tmp_path, 7, 40)
    bad = tmp_path / "999"
    bad.mkdir()
    (bad / "stat").write_text("999 (broken\n")
    pids = [p.pid for p in processes] + [999, 4_000_000]
    fresh = skim.skim(str(tmp_path), pids, "stat")
    kept = KeptSkims(str(tmp_path))
    try:
        again = kept.skim(str(tmp_path), pids, "stat")
    finally:
        kept.close()
    for result in (fresh, again):
        assert [p.pid for p in result.problems] == [999]
        assert result.vanished == 1
        for process in processes:
            stat = procfs.parse_stat((tmp_path / str(process.pid) / "stat").read_bytes())
            line = result.lines[process.pid]
            assert line == (
                stat.state,
                stat.ppid,
                stat.pgid,
                stat.sid,
                stat.flags,
                stat.minflt,
                stat.majflt,
                stat.start_time,
                stat.rss_pages,
            )
            assert result.values[process.pid] == stat.rss_pages * procfs.PAGE_SIZE


def test_culprit_names_a_family_key() -> None:
    """culprit says what it ranks on, so chains that contain it get the fast path."""
    assert isinstance(CulpritPolicy(CulpritOptions()).scan_key(), FamilyKey)


@pytest.mark.skipif(not skim.NATIVE_AVAILABLE, reason="the optional native extension is not built")
@pytest.mark.parametrize("seed", range(8))
def test_native_family_bounds_match_the_python_reference(tmp_path: Path, seed: int) -> None:
    """The native family bounds are the Python ones: same families, same bounds."""
    from pressured.scan import families
    from pressured.scan.kept import StatGeneration

    processes, rng = generated(tmp_path, seed, 300)
    pids = [p.pid for p in processes]
    before = procfs.skim_python(str(tmp_path), pids, "stat")
    for process in processes:
        process.live(rng, busy=True)
        process.write(tmp_path)
    now = procfs.skim_python(str(tmp_path), pids, "stat")
    earlier = StatGeneration(before.taken_ns, before.lines)
    for grouped in (True, False):
        options: dict[str, Any] = {
            "self_pid": 0,
            "families": grouped,
            "min_demand": 2**20,
            "swap_in_use": rng.choice([0, 4096]),
        }
        results = []
        for native in (True, False):
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(skim, "NATIVE_AVAILABLE", native)
                bounded = families.bounded_families(now.lines, earlier, now.taken_ns, **options)
            results.append(sorted((bound, sorted(members)) for bound, members in bounded))
        assert results[0] == results[1]
        assert any(bound[0] for bound, _members in results[0])  # some families demand


def test_kept_files_of_one_scope_share_one_fd_budget(tmp_path: Path) -> None:
    """Two skim files per process (the default chain) never keep more fds than the bound
    (each file used to keep up to the bound: at 10,000 processes the daemon ran out of fds)."""
    processes, _rng = generated(tmp_path, 3, 30)
    pids = [p.pid for p in processes]
    kept = KeptSkims(str(tmp_path), max_fds=40)
    try:
        for name in ("stat", "oom_score"):
            result = kept.skim(str(tmp_path), pids, name)
            assert len(result.values) == len(pids)  # the rest are read with a fresh open
        assert kept.open_fds == 40
    finally:
        kept.close()


@pytest.fixture
def idle_scope() -> Iterator[ScratchGroup]:
    """A scratch group of forty identical sleepers: one oom_score, one size, no demand."""
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(f"real-kernel test: {reason}")
    with ScratchGroup(None) as group:
        sleepers = [
            group.spawn(["sleep", "600"], stdout=subprocess.DEVNULL) for _ in range(SLEEPERS)
        ]
        deadline = time.monotonic() + 30
        while not all(_asleep(proc.pid) for proc in sleepers):
            assert time.monotonic() < deadline, "sleepers did not settle"
            time.sleep(0.01)
        yield group


def _asleep(pid: int) -> bool:
    """In nanosleep: exec'd and its loader done, so its figures no longer move."""
    try:
        return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def test_identical_idle_processes_are_not_all_read_in_full(idle_scope: ScratchGroup) -> None:
    """Forty sleepers tie on demand, size and oom_score: the stat skim's start times and PIDs
    settle the ties, so neither policy of the default chain reads them all (both did: ties at
    the top were read for the policy's tie-breaks)."""
    chain = PolicyChain.from_settings(DEFAULT_CHAIN, "policies")
    plan = plan_for(link.policy for link in chain.links)
    common: dict[str, Any] = {
        "layout": idle_scope.layout,
        "cgroup_path": idle_scope.path,
        "memcg_v1_path": idle_scope.memcg_path,
    }
    kept = KeptSkims()
    try:
        fast = take_snapshot(EVENT, **common, plan=plan, cmdlines=CmdlineReader(), kept=kept)
    finally:
        kept.close()
    full = ProcessHistory().complete(take_snapshot(EVENT, **common))
    assert len(fast.processes) < SLEEPERS // 2
    assert chain_choice(fast) == chain_choice(full)
    safety_net = OomScorePolicy(OomScoreOptions())
    assert choice(decide(safety_net, fast)) == choice(decide(safety_net, full))


def test_ties_on_oom_score_alone_are_settled_by_their_stat_lines(
    idle_scope: ScratchGroup,
) -> None:
    """The oom_score policy alone (or as the default chain's second stage) has no stat skim:
    the forty tied sleepers get their stat lines read (about 10 µs each) instead of their
    full records (six files and a command line each), and the victim is the full scan's.
    Before, every tied process was read in full."""
    policy = OomScorePolicy(OomScoreOptions())
    common: dict[str, Any] = {
        "layout": idle_scope.layout,
        "cgroup_path": idle_scope.path,
        "memcg_v1_path": idle_scope.memcg_path,
    }
    fast = take_snapshot(EVENT, **common, plan=plan_for([policy]), cmdlines=CmdlineReader())
    full = take_snapshot(EVENT, **common)
    assert len(fast.processes) < SLEEPERS // 2
    assert choice(decide(policy, fast)) == choice(decide(policy, full))


def test_an_extension_built_before_the_stat_skim_is_not_asked_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale native build (no stat support) falls back to Python for stat, not an error."""

    class Stale:
        """An extension with the old entry points only."""

        @staticmethod
        def skim(*_args: object) -> object:
            raise ValueError("which must be 0 (statm) or 1 (oom_score)")

        pread_many = skim

    processes, _rng = generated(tmp_path, 5, 20)
    monkeypatch.setattr(skim, "_skim", Stale())
    monkeypatch.setattr(skim, "NATIVE_AVAILABLE", True)
    result = skim.skim(str(tmp_path), [p.pid for p in processes], "stat")
    assert len(result.lines) == len(processes)
    kept = KeptSkims(str(tmp_path))
    try:
        again = kept.skim(str(tmp_path), [p.pid for p in processes], "stat")
    finally:
        kept.close()
    assert again.lines == result.lines


def test_kept_files_closed_by_their_scope_keep_nothing_afterwards(tmp_path: Path) -> None:
    """A warm-up still running on the I/O thread when the scope closes its kept files (a
    fast SIGTERM: the daemon crashed iterating the table) keeps no fds nobody would close."""
    processes, _rng = generated(tmp_path, 4, 20)
    pids = [p.pid for p in processes]
    kept = KeptSkims(str(tmp_path))
    kept.skim(str(tmp_path), pids, "stat")
    kept.close()
    for name in ("stat", "oom_score"):
        result = kept.skim(str(tmp_path), pids, name)
        assert len(result.values) == len(pids)
    assert kept.open_fds == 0


def test_a_process_born_since_the_last_snapshot_counts_its_faults_since_birth() -> None:
    """Full path: history hands a process born after its last snapshot a sample of no faults
    (it ranked as "no earlier sample", so a thrasher started after that snapshot lost to a
    big idle process by size)."""
    from pressured.testing import make_process, make_snapshot

    history = ProcessHistory(resample_s=0)
    then_ns = time.monotonic_ns() - 10**9
    old = make_process(10, rss_mib=100, minflt=500, start_time=1)
    history.complete(dataclasses.replace(make_snapshot([old]), taken_monotonic_ns=then_ns))
    born = procfs.start_ticks_at(then_ns) + 20
    grower = make_process(11, rss_mib=30, minflt=50_000, start_time=born)
    now = dataclasses.replace(make_snapshot([old, grower]), taken_monotonic_ns=then_ns + 10**9)
    completed = history.complete(now)
    sample = completed.previous[grower.identity]
    assert (sample.minflt, sample.majflt, sample.monotonic_ns) == (0, 0, then_ns)
    decision = decide(CulpritPolicy(CulpritOptions()), completed)
    assert decision.victims[0].pid == 11 and decision.victims[0].figures["rule"] == "demand"


def test_a_process_born_since_the_kept_reading_counts_its_faults_since_birth(
    idle_scope: ScratchGroup,
) -> None:
    """Fast path: a process started after the scope's kept stat reading (taken at arm time)
    is ranked on its faults since birth, not left without a rate."""
    chain = PolicyChain.from_settings(DEFAULT_CHAIN, "policies")
    plan = plan_for(link.policy for link in chain.links)
    assert plan is not None
    kept = KeptSkims()
    try:
        prewarm_scope(kept, plan.skim_files, idle_scope.group)
        grower = idle_scope.spawn([sys.executable, "-c", FAULTER, "0"])
        _ready(grower)
        time.sleep(0.15)  # the interval the rates are taken over (at least 0.1 s)
        snapshot = take_snapshot(
            EVENT,
            layout=idle_scope.layout,
            cgroup_path=idle_scope.path,
            memcg_v1_path=idle_scope.memcg_path,
            plan=plan,
            cmdlines=CmdlineReader(),
            kept=kept,
        )
    finally:
        kept.close()
    decision = decide(CulpritPolicy(CulpritOptions()), snapshot)
    assert decision.victims[0].pid == grower.pid
    assert decision.victims[0].figures["rule"] == "demand"
