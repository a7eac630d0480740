"""The backlog that stands in for the operations sinks while the daemon arms: nothing the
controller publishes before metrics, journal and hooks exist is lost, reordered or repeated."""

from __future__ import annotations

import asyncio

from pressured.events import EventSource, KillRecord, KillResult, PressureEvent, VictimKind
from pressured.ops.backlog import Backlog


def _event(episode: int) -> PressureEvent:
    return PressureEvent(scope="/jobs", level="some", source=EventSource.MANUAL, episode=episode)


def _kill(pid: int) -> KillRecord:
    return KillRecord(
        kind=VictimKind.PROCESS,
        target=f"pid {pid}",
        pid=pid,
        comm="hog",
        cgroup="/jobs",
        policy="oom_score",
        reason="largest",
        scope="/jobs",
        level="some",
        result=KillResult.KILLED,
        signal="SIGKILL",
        rss_before_bytes=1 << 20,
    )


class RecordingSink:
    def __init__(self, backlog: Backlog | None = None, publish_during: KillRecord | None = None):
        self.seen: list[PressureEvent | KillRecord] = []
        self._backlog = backlog
        self._publish_during = publish_during

    async def on_pressure(self, event: PressureEvent) -> None:
        self.seen.append(event)
        if self._backlog is not None and self._publish_during is not None:
            # The controller publishes again while the hand-over awaits this sink.
            record, self._publish_during = self._publish_during, None
            await self._backlog.on_kill(record)

    async def on_kill(self, record: KillRecord) -> None:
        self.seen.append(record)

    async def aclose(self) -> None:
        return None


class BrokenSink(RecordingSink):
    async def on_kill(self, record: KillRecord) -> None:
        raise OSError("disk gone")


def test_a_kill_before_the_sinks_exist_reaches_them_in_order() -> None:
    """Event then kill, held while arming, are delivered to every sink in that order."""
    backlog = Backlog()
    first, kill = _event(1), _kill(42)
    journal, metrics = RecordingSink(), RecordingSink()

    async def scenario() -> None:
        await backlog.on_pressure(first)
        await backlog.on_kill(kill)
        await backlog.hand_over([journal, metrics], timeout_s=1.0)

    asyncio.run(scenario())
    assert journal.seen == [first, kill]
    assert metrics.seen == [first, kill]


def test_what_is_published_during_the_hand_over_is_delivered_too() -> None:
    """A kill published while the hand-over awaits a sink is not lost between the two."""
    backlog = Backlog()
    late = _kill(43)
    sink = RecordingSink(backlog, publish_during=late)
    first = _event(1)

    async def scenario() -> None:
        await backlog.on_pressure(first)
        await backlog.hand_over([sink], timeout_s=1.0)

    asyncio.run(scenario())
    assert sink.seen == [first, late]


def test_after_the_hand_over_the_backlog_holds_nothing() -> None:
    """Once the real sinks are attached, the backlog must not deliver anything twice."""
    backlog = Backlog()
    sink = RecordingSink()

    async def scenario() -> None:
        await backlog.hand_over([sink], timeout_s=1.0)
        await backlog.on_kill(_kill(44))
        await backlog.hand_over([sink], timeout_s=1.0)

    asyncio.run(scenario())
    assert sink.seen == []


def test_a_failing_sink_does_not_keep_the_record_from_the_others() -> None:
    """The journal failing on a held kill still lets metrics count it."""
    backlog = Backlog()
    kill = _kill(45)
    broken, metrics = BrokenSink(), RecordingSink()

    async def scenario() -> None:
        await backlog.on_kill(kill)
        await backlog.hand_over([broken, metrics], timeout_s=1.0)

    asyncio.run(scenario())
    assert metrics.seen == [kill]


def test_a_full_backlog_keeps_the_newest_and_counts_the_dropped() -> None:
    """Bounded: a start-up that somehow publishes more than the limit drops the oldest."""
    backlog = Backlog(limit=2)
    sink = RecordingSink()
    kills = [_kill(pid) for pid in (1, 2, 3)]

    async def scenario() -> None:
        for kill in kills:
            await backlog.on_kill(kill)
        await backlog.hand_over([sink], timeout_s=1.0)

    asyncio.run(scenario())
    assert sink.seen == kills[1:]
    assert backlog.dropped == 1
