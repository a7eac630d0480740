"""The guard: who is never killed, and the pacing of kills (with an injected clock)."""

from __future__ import annotations

import threading

import pytest

from pressured.config import GuardSettings
from pressured.deathwatch import DeathWatch
from pressured.guard import Guard
from pressured.pacing import Pacing
from pressured.policies.base import Victim
from pressured.snapshot import CgroupRecord, Snapshot
from tests.records import process, snapshot

SELF = 4242


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(clock: FakeClock | None = None, **settings: object) -> Guard:
    return Guard(
        GuardSettings.model_validate(settings),
        self_pid=SELF,
        self_cgroup="/system/pressured",
        clock=clock or FakeClock(),
    )


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (process(1), "PID 1"),
        (process(SELF), "pressured itself"),
        (process(2, kernel_thread=True), "kernel thread"),
        (process(10, adj=-1000), "oom_score_adj is -1000"),
        (process(11, cgroup="/init.scope"), "protected cgroup /init.scope"),
    ],
)
def test_always_protected(record: object, expected: str) -> None:
    """PID 1, ourselves, kernel threads, adj -1000 and default cgroups are never killable."""
    from pressured.kernel.procfs import ProcessRecord

    assert isinstance(record, ProcessRecord)
    reason = guard().process_protection(record)
    assert reason is not None and expected in reason


def test_configured_protection_by_uid_cmdline_and_cgroup() -> None:
    """Configured uids, cmdline patterns and cgroup subtrees are protected."""
    g = guard(protect_uids=[33], protect_cmdline=[r"--role=primary"], protect_cgroups=["/db"])
    assert "uid 33" in (g.process_protection(process(20, uid=33)) or "")
    assert "cmdline" in (
        g.process_protection(process(21, cmdline="pg --role=primary", uid=0)) or ""
    )
    # A command line is the process's own choice: alone it protects only root-owned ones.
    assert g.process_protection(process(25, cmdline="pg --role=primary")) is None
    assert "/db" in (g.process_protection(process(22, cgroup="/db/replica")) or "")
    assert g.process_protection(process(23, cgroup="/dbx")) is None
    assert g.process_protection(process(24)) is None


def test_victim_must_be_in_snapshot_with_matching_start_time() -> None:
    """A pid outside the snapshot, or with another start time, is rejected."""
    record = process(30, start_time=5)
    snap = snapshot(record)
    g = guard()
    assert g.check(Victim.process(record, "ok"), snap) is None
    stranger = process(31)
    assert "not in the snapshot" in (g.check(Victim.process(stranger, "x"), snap) or "")
    reused = process(30, start_time=6)
    assert "start time" in (g.check(Victim.process(reused, "x"), snap) or "")


def test_cgroup_holding_the_daemon_or_a_protected_member_is_rejected() -> None:
    """cgroup.kill would take protected members (or us) down: such groups are refused."""
    member = process(40, adj=-1000, cgroup="/jobs/a")
    group_a = CgroupRecord(path="/jobs/a", memory=None, pressure=None, pids=(40,))
    group_b = CgroupRecord(path="/jobs/b", memory=None, pressure=None, pids=(41,))
    snap = snapshot(member, process(41, cgroup="/jobs/b"))
    snap = Snapshot(
        scope=snap.scope,
        event=snap.event,
        processes=snap.processes,
        cgroups=(group_a, group_b),
        self_pid=SELF,
    )
    g = guard()
    assert "protected" in (g.check(Victim.group(group_a, "x"), snap) or "")
    assert g.check(Victim.group(group_b, "x"), snap) is None
    assert g.cgroup_protection("/", snap) == "the root cgroup"
    assert g.cgroup_protection("/system", snap) == "holds pressured itself"


def test_no_second_kill_while_one_is_in_flight_then_cooldown() -> None:
    """In flight blocks; after the victim is confirmed dead the settle delay applies."""
    clock = FakeClock()
    g = guard(clock, cooldown_ms=1500)
    assert g.pacing() is None
    g.kill_started()
    assert g.pacing() == "a kill is in flight"
    g.kill_finished()
    assert "cooling down" in (g.pacing() or "")
    clock.now += 1.6
    assert g.pacing() is None


def test_rate_limit_counts_kills_in_the_last_minute() -> None:
    """At most max_kills_per_minute kills start within any 60 s."""
    clock = FakeClock()
    g = guard(clock, cooldown_ms=0, max_kills_per_minute=2)
    for _ in range(2):
        g.kill_started()
        g.kill_finished()
    assert "rate limit" in (g.pacing() or "")
    clock.now += 60.0
    assert g.pacing() is None


def test_a_new_guard_on_the_same_pacing_keeps_the_history_with_its_own_settings() -> None:
    """A reload builds a new guard on the daemon's Pacing: the last kill's cooldown and the
    kills of the last minute carry over, judged by the new settings."""
    clock = FakeClock()
    pacing = Pacing(clock)
    old = Guard(GuardSettings(cooldown_ms=1000), self_pid=SELF, pacing=pacing)
    old.kill_started()
    new = Guard(
        GuardSettings(cooldown_ms=5000, max_kills_per_minute=1), self_pid=SELF, pacing=pacing
    )
    assert new.pacing() == "a kill is in flight"
    new.kill_finished()
    assert "cooling down" in (old.pacing() or "")
    clock.now += 5.1
    assert "rate limit" in (new.pacing() or "")
    assert old.pacing() is None  # its own limit (10 a minute) is not reached


def test_try_start_checks_and_counts_in_one_step() -> None:
    """The watchdog thread's check-and-start cannot let two kills through at once."""
    g = guard(FakeClock(), cooldown_ms=0)
    assert g.try_start() is None
    assert g.try_start() == "a kill is in flight"
    assert g.in_flight == 1


def test_pacing_is_consistent_under_threads() -> None:
    """Many threads racing try_start/kill_finished never let two kills be in flight."""
    pacing = Pacing()
    g = Guard(GuardSettings(cooldown_ms=0, max_kills_per_minute=10_000), pacing=pacing)
    overlaps: list[int] = []

    def worker() -> None:
        for _ in range(300):
            if g.try_start() is None:
                overlaps.append(pacing.in_flight)
                g.kill_finished()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps and set(overlaps) == {1}


def test_a_dying_victim_is_refused_and_left_out() -> None:
    """A process already sent SIGKILL that has not exited is protected by identity only:
    another process that later gets its PID is not."""
    deaths = DeathWatch()
    deaths._dying[(20, 1000)] = "pid 20 (worker)"
    g = Guard(GuardSettings(), self_pid=SELF, deaths=deaths)
    assert "undying" in (g.process_protection(process(20, start_time=1000)) or "")
    assert g.process_protection(process(20, start_time=2000)) is None
