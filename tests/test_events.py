"""Values that travel through pressured: the kill reason word and the one PSI level name."""

from __future__ import annotations

from pressured.events import (
    EventSource,
    KillReason,
    KillRecord,
    KillResult,
    PressureEvent,
    VictimKind,
)
from pressured.kernel.psi import Resource, TriggerSpec


def test_kill_reason_word_for_each_event_source() -> None:
    """Each kind of event maps to its stable word (a full trigger is a critical stall)."""
    full = TriggerSpec(Resource.MEMORY, "full", 100_000, 2_000_000)
    some = TriggerSpec(Resource.MEMORY, "some", 100_000, 2_000_000)

    def reason(source: EventSource, trigger: TriggerSpec | None = None) -> KillReason:
        return KillReason.of(PressureEvent("system", "lvl", source, trigger=trigger))

    assert reason(EventSource.PSI, full) == "critical_stall"
    assert reason(EventSource.PSI, some) == "stall"
    assert reason(EventSource.RECHECK, full) == "pressure_after_kill"
    assert reason(EventSource.STARVATION, some) == "starved_trigger"
    assert reason(EventSource.MEMORY) == "low_memory"
    assert reason(EventSource.WATCHDOG) == "watchdog"
    assert reason(EventSource.MANUAL) == "manual"
    assert {reason(source) for source in EventSource if source is not EventSource.PSI} | {
        reason(EventSource.PSI, full),
        reason(EventSource.PSI, some),
    } == set(KillReason)


def test_kill_record_dict_names_the_level_pressure_level_and_says_why_beside_the_reason() -> None:
    """to_dict() (log line, journal, hooks, /status) has pressure_level, never level, and the
    kill_reason word right after the policy's prose reason."""
    record = KillRecord(
        kind=VictimKind.PROCESS,
        target="pid 7 (hog)",
        pid=7,
        comm="hog",
        cgroup=None,
        policy="largest",
        reason="largest RSS",
        scope="system",
        level="full",
        result=KillResult.KILLED,
        signal="SIGKILL",
        rss_before_bytes=1,
        kill_reason=KillReason.CRITICAL_STALL,
    )
    data = record.to_dict()
    assert "level" not in data
    assert data["pressure_level"] == "full"
    keys = list(data)
    assert keys[keys.index("reason") + 1] == "kill_reason"
    assert data["kill_reason"] == "critical_stall"
    event = PressureEvent("system", "some", EventSource.PSI).to_dict()
    assert "level" not in event and event["pressure_level"] == "some"
