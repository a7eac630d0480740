"""The cyclic collector is off while a decision runs, and back as it was afterwards."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from pressured.config import Settings
from pressured.controller import Controller
from pressured.events import EventSource, PressureEvent
from pressured.gcpause import collection_paused
from pressured.policies.base import BasePolicy, Decision, NoOptions
from pressured.snapshot import Snapshot
from pressured.testing.scratch import ScratchGroup

seen_enabled: list[bool] = []
"""gc.isenabled() as the policy below saw it, one entry per call."""


class Observer(BasePolicy[NoOptions]):
    """Looks at the collector from inside the decision, and kills no one."""

    name: ClassVar[str] = "gc_observer"

    async def __call__(self, snapshot: Snapshot) -> Decision:
        seen_enabled.append(gc.isenabled())
        return Decision.no_action("observed")


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        if not was:
            gc.disable()


@pytest.mark.kernel
def test_the_collector_is_off_during_a_decision_and_on_after(
    scratch: ScratchGroup, collector_on: None
) -> None:
    """A real scope's decision: the policy runs with the collector off (before: on, so a
    full collection could land between the event and the kill); it is on again after."""
    seen_enabled.clear()
    settings = Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": False},
            "metrics": {"enabled": False},
            "scopes": [
                {
                    "cgroup": scratch.path,
                    "memcg_v1": scratch.memcg_path,
                    "starvation_check_s": 0,
                    "policies": [{"name": "tests.test_gcpause:Observer"}],
                }
            ],
        }
    )

    async def one_event() -> None:
        async with Controller(settings) as controller:
            runner = controller.scopes[0]
            event = PressureEvent(scope=runner.name, level="some", source=EventSource.MANUAL)
            await runner.handle(event)

    asyncio.run(one_event())
    assert seen_enabled == [False]
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off() -> None:
    """pressured as a library: it never turns on a collector its host disabled."""
    was = gc.isenabled()
    gc.disable()
    try:
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()


def test_overlapping_decisions_restore_the_collector_when_the_last_ends(
    collector_on: None,
) -> None:
    """Two scopes deciding at once on two threads: on again only after both are done."""
    first_in, release = threading.Event(), threading.Event()

    def first() -> None:
        with collection_paused():
            first_in.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_in.wait(10)
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first decision still runs
    finally:
        release.set()
        thread.join(10)
    assert gc.isenabled()
