"""Storage reads as demand: the probe that sees a read(2) thrasher, when it runs, and that the
fast path and a full scan choose the same victim with it.

The end-to-end proof (a daemon, a reader running since before it started, the idle 60 MiB
bystander left alive) is ``tests/test_scenarios.py::test_read_thrasher_dies_before_the_idle_
process``, which failed (strict xfail) before culprit counted storage reads.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pressured.episode import read_refaults
from pressured.history import ProcessHistory
from pressured.policies import culprit as culprit_module
from pressured.policies.culprit import CulpritOptions, CulpritPolicy
from pressured.readprobe import RefaultGate, complete_read_rates, probe_for
from pressured.scan import skim
from pressured.scan.cmdline import CmdlineReader
from pressured.scan.plan import FamilyKey, plan_for
from pressured.scan.reads import probe_read_rates, storage_reads
from pressured.snapshot import Snapshot, take_snapshot
from pressured.testing.culprits import MODULE
from pressured.testing.scratch import WORKLOAD_MODULE, ScratchGroup
from tests.conftest import kernel_skip_reason
from tests.test_scan_families import (
    EVENT,
    both_ways,
    chain_choice,
    choice,
    decide,
    fast_snapshot,
    generated,
)

MIB = 1 << 20


@pytest.fixture
def tiny_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rates over the microseconds between two writes of a fake tree (as in
    tests/test_scan_families.py)."""
    monkeypatch.setattr(culprit_module, "MIN_INTERVAL_S", 1e-9)


def family_key(policy: CulpritPolicy) -> FamilyKey:
    key = policy.scan_key()
    assert isinstance(key, FamilyKey)
    return key


# -- parsing -------------------------------------------------------------------------------
def _write_io(root: Path, pid: int, text: str) -> None:
    (root / str(pid)).mkdir(exist_ok=True)
    (root / str(pid) / "io").write_text(text)


def test_storage_reads_is_the_read_bytes_field_and_none_for_the_gone_or_malformed(
    tmp_path: Path,
) -> None:
    _write_io(
        tmp_path,
        7,
        "rchar: 900\nwchar: 1\nsyscr: 2\nsyscw: 3\nread_bytes: 4096\nwrite_bytes: 0\n"
        "cancelled_write_bytes: 0\n",
    )
    _write_io(tmp_path, 8, "rchar: 900\nread_bytes: lots\n")
    _write_io(tmp_path, 9, "rchar: 900\n")
    assert storage_reads(7, str(tmp_path)) == 4096
    assert storage_reads(8, str(tmp_path)) is None
    assert storage_reads(9, str(tmp_path)) is None
    assert storage_reads(10, str(tmp_path)) is None  # gone


def test_the_probe_rates_only_what_grew_between_its_two_readings(tmp_path: Path) -> None:
    """Each PID's reads over the wait; those that read nothing, vanished or appeared are left
    out (whole bytes per second, so family sums stay exact)."""
    for pid, value in ((1, 0), (2, 5 * MIB), (3, 100), (4, 7)):
        _write_io(tmp_path, pid, f"read_bytes: {value}\n")

    def meanwhile(_seconds: float) -> None:
        _write_io(tmp_path, 2, f"read_bytes: {5 * MIB + MIB}\n")  # read 1 MiB
        (tmp_path / "3" / "io").unlink()  # exited
        _write_io(tmp_path, 5, "read_bytes: 99999\n")  # born: not in the first reading

    rates = probe_read_rates([1, 2, 3, 4, 5], wait_s=0.1, proc_root=str(tmp_path), sleep=meanwhile)
    assert set(rates) == {2}
    assert isinstance(rates[2], int) and rates[2] > 0


# -- when it runs ------------------------------------------------------------------------
class Counter:
    def __init__(self, *values: int | Exception) -> None:
        self.values = list(values)

    def __call__(self) -> int:
        value = self.values.pop(0)
        if isinstance(value, Exception):
            raise value
        return value


def test_the_gate_opens_only_while_the_scope_refaults() -> None:
    """Refaults since arming open it; a flat counter closes it; each call moves the mark."""
    gate = RefaultGate(Counter(10, 15, 15, 16))
    gate.mark()  # 10
    assert gate.opens()  # 15 > 10
    assert not gate.opens()  # 15, flat: an injected event on a quiet scope
    assert gate.opens()  # 16


def test_an_unreadable_refault_counter_lets_the_probe_run() -> None:
    """Slower, never blind: a failed reading (at arming or now) opens the gate."""
    gate = RefaultGate(Counter(OSError("gone"), 3, ValueError("bad")))
    gate.mark()
    assert gate.opens()  # no mark
    assert gate.opens()  # no reading now


def test_a_chain_without_a_probing_key_never_reads_the_counter() -> None:
    """``oom_score`` alone, or culprit with the probe off: no memory.stat read per event."""
    gate = RefaultGate(Counter())  # any reading would fail the pop
    probing_off = FamilyKey(
        rank=family_key(CulpritPolicy(CulpritOptions())).rank, min_demand_bytes_per_s=1
    )
    assert probe_for([], "/proc", gate) is None
    assert probe_for([probing_off], "/proc", gate) is None


def test_the_gate_is_asked_when_the_probe_is_called_and_a_shut_gate_measures_nothing() -> None:
    """Handing out the probe reads no counter (a decision that never falls back to size pays
    nothing); calling it asks the gate, and with the counter flat it measures nothing (None,
    not "nobody read": the scan then says no probe ran)."""
    counter = Counter(5, 5)
    gate = RefaultGate(counter)
    gate.mark()
    probe = probe_for([family_key(CulpritPolicy(CulpritOptions()))], "/proc", gate)
    assert probe is not None and counter.values == [5]
    assert probe([os.getpid()]) is None
    assert counter.values == []


# -- the same victim both ways, on generated trees -----------------------------------------
class FakeProbe:
    """Storage reads as the generated tree's processes would show them."""

    def __init__(self, rates: dict[int, int]) -> None:
        self.rates = rates
        self.calls = 0

    def __call__(self, pids: Sequence[int]) -> dict[int, int]:
        self.calls += 1
        return {pid: self.rates[pid] for pid in pids if pid in self.rates}


@pytest.mark.usefixtures("tiny_interval")
@pytest.mark.parametrize("native", [False, True], ids=["python-skim", "native-skim"])
@pytest.mark.parametrize("seed", range(12))
def test_fast_path_and_full_scan_choose_the_same_victim_with_storage_reads(
    tmp_path: Path, seed: int, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quiet random trees (the size fallback is next) where a few processes read from
    storage at rates below, near and far above the demand floor: culprit (four ways) and the
    default chain choose the same from the fast path as from a full scan completed by
    :func:`complete_read_rates`, and the probe ran on both."""
    if native and not skim.NATIVE_AVAILABLE:
        pytest.skip("the optional native skim extension is not built here")
    monkeypatch.setattr(skim, "NATIVE_AVAILABLE", native)
    root = str(tmp_path)
    processes, rng = generated(tmp_path, seed, 300)
    readers = rng.sample(processes, 6)
    rates = {p.pid: rng.choice([MIB // 2, MIB, 2 * MIB, 300 * MIB]) for p in readers}
    with both_ways(root) as (history, planned):
        if seed % 2:
            # Half the trees see PIDs reused by newborns (their faults since birth are
            # demand: the probe may not run); in the others nothing faults at all.
            for process in processes:
                process.live(rng, busy=False)
                process.write(tmp_path)
        full_scan = history.complete(take_snapshot(EVENT, layout=None, proc_root=root))
        probed_any = False
        for label, policy, plan, kept in planned:
            fast_probe, full_probe = FakeProbe(rates), FakeProbe(rates)
            fast = fast_snapshot(root, plan, kept, read_probe=fast_probe)
            full = complete_read_rates(full_scan, plan.family_keys, full_probe)
            assert fast_probe.calls == full_probe.calls, label
            probed_any = probed_any or bool(fast_probe.calls)
            if policy is None:
                assert chain_choice(fast) == chain_choice(full)
            else:
                decision = decide(policy, fast)
                assert choice(decision) == choice(decide(policy, full)), label
                readers_in_scope = any(rates.get(p.pid, 0) >= MIB for p in full_scan.candidates)
                if label == "culprit" and fast_probe.calls and readers_in_scope:
                    # Not vacuous: where the probe ran, the reads decided it.
                    assert (
                        decision.victims[0].figures["read_bytes_per_s"]
                        == max(f.read_bytes_per_s for f in policy.rank(fast))
                        >= MIB
                    )
        assert probed_any


# -- on the real kernel ----------------------------------------------------------------------
def _ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(b"ready"), "workload did not start"


@pytest.fixture
def reader_beside_an_idle_hog() -> Iterator[tuple[ScratchGroup, int, int]]:
    """A 96 MiB group: an idle process holding 60 MiB, and a small process re-reading a
    256 MiB file through read(2) (both running before any reading is kept)."""
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(f"real-kernel test: {reason}")
    with ScratchGroup(96 * MIB) as group:
        hog = group.spawn([sys.executable, "-m", WORKLOAD_MODULE, "hog", "60"])
        _ready(hog)
        reader = group.spawn([sys.executable, "-m", MODULE, "reader", "256"])
        _ready(reader)
        yield group, reader.pid, hog.pid


@pytest.mark.kernel
@pytest.mark.pressure
def test_read_probe_rates_a_read2_thrasher_and_not_the_idle_process(
    reader_beside_an_idle_hog: tuple[ScratchGroup, int, int],
) -> None:
    _group, reader, hog = reader_beside_an_idle_hog
    rates = probe_read_rates([reader, hog], wait_s=0.1)
    assert rates.get(reader, 0) >= MIB, rates
    assert hog not in rates


@pytest.mark.kernel
@pytest.mark.pressure
def test_a_read2_thrasher_makes_its_group_refault(
    reader_beside_an_idle_hog: tuple[ScratchGroup, int, int],
) -> None:
    """The gate's premise (kernel fact): pages it reads again were evicted a moment ago, so
    the group's workingset refault counter rises while it runs."""
    group, _reader, _hog = reader_beside_an_idle_hog
    gate = RefaultGate(lambda: read_refaults(group.group, "/proc"))
    gate.mark()
    asyncio.run(asyncio.sleep(0.5))
    assert gate.opens()


@pytest.mark.kernel
@pytest.mark.pressure
def test_the_reader_dies_not_the_larger_idle_process_both_ways(
    reader_beside_an_idle_hog: tuple[ScratchGroup, int, int],
) -> None:
    """Real processes, real probe: the fast path and a full scan both name the reader (with
    storage reads as its demand); without a probe both fall back to the 60 MiB one."""
    group, reader, hog = reader_beside_an_idle_hog
    common: dict[str, Any] = {
        "layout": group.layout,
        "cgroup_path": group.path,
        "memcg_v1_path": group.memcg_path,
    }
    policy = CulpritPolicy(CulpritOptions())
    key = family_key(policy)
    plan = plan_for([policy])
    assert plan is not None
    probe = probe_for([key], "/proc", RefaultGate(itertools.count().__next__))  # always rising

    def fast(with_probe: bool) -> Snapshot:
        return take_snapshot(
            EVENT,
            **common,
            plan=plan,
            cmdlines=CmdlineReader(),
            read_probe=probe if with_probe else None,
        )

    def full(with_probe: bool) -> Snapshot:
        snapshot = ProcessHistory().complete(take_snapshot(EVENT, **common))
        return complete_read_rates(snapshot, [key], probe if with_probe else None)

    for snapshot in (fast(True), full(True)):
        decision = decide(policy, snapshot)
        assert decision.victims[0].pid == reader, decision.reason
        assert "reading from storage" in decision.reason
    for snapshot in (fast(False), full(False)):
        decision = decide(policy, snapshot)
        assert decision.victims[0].pid == hog, decision.reason
