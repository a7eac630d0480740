"""A chain is scanned in stages: a later policy's reads happen only when the chain reaches it.

The default chain is ``culprit`` then ``oom_score``. Planned as one, every event skimmed
``oom_score`` of every process beside ``stat``: twice the kernel work (and at 10,000
processes, where the fd budget cannot keep both files open, 10,000 fresh opens) for a policy
asked only when ``culprit`` finds nothing.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from pressured.config import Settings
from pressured.controller import Controller
from pressured.events import EventSource, KillRecord, PressureEvent
from pressured.policies.culprit import CulpritOptions, CulpritPolicy
from pressured.policies.oom_score import OomScoreOptions, OomScorePolicy
from pressured.scan.plan import NO_PROCESSES, ScanPlan, plan_stages
from pressured.snapshot import Snapshot
from pressured.testing.scratch import ScratchGroup
from tests.conftest import kernel_skip_reason

_listeners: list[list[str]] = []
"""Each listening test's list of ``*/oom_score`` paths this process opened."""


def _audit(event: str, args: tuple[Any, ...]) -> None:
    path = args[0] if event == "open" and args else None
    if _listeners and isinstance(path, str) and path.endswith("/oom_score"):
        for opened in _listeners:
            opened.append(path)


sys.addaudithook(_audit)  # hooks stay for good: this one records only for listening tests


@pytest.fixture
def unlimited() -> Iterator[ScratchGroup]:
    """A scratch group without a memory limit (a limit would make the kernel, not the test's
    controller, pick among the hogs)."""
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(f"real-kernel test: {reason}")
    with ScratchGroup(None) as group:
        yield group


@pytest.fixture
def oom_score_opens() -> Iterator[list[str]]:
    opened: list[str] = []
    _listeners.append(opened)
    try:
        yield opened
    finally:
        _listeners.remove(opened)


def _settings(scratch: ScratchGroup, policies: list[dict[str, Any]] | None) -> Settings:
    scope: dict[str, Any] = {
        "cgroup": scratch.path,
        "memcg_v1": scratch.memcg_path,
        "starvation_check_s": 0,
    }
    if policies is not None:
        scope["policies"] = policies
    return Settings.model_validate(
        {
            "daemon": {"mlockall": False},
            "watchdog": {"enabled": False},
            "metrics": {"enabled": False},
            "guard": {"cooldown_ms": 0},
            "scopes": [scope],
        }
    )


async def _one_event(
    settings: Settings, members: int, read_in_full: set[int] | None = None
) -> tuple[KillRecord | None, list[str]]:
    """Start a controller, let its scope open its kept files, offer one manual event; the
    kill record and the names of the kept files afterwards. ``read_in_full`` collects the
    PIDs of every full record the event's snapshots hold."""
    async with Controller(settings) as controller:
        runner = controller.scopes[0]
        take = runner.take_snapshot

        async def noted(event: PressureEvent, plan: ScanPlan | None) -> Snapshot:
            snapshot = await take(event, plan)
            if read_in_full is not None:
                read_in_full.update(p.pid for p in snapshot.processes)
            return snapshot

        runner.take_snapshot = noted  # type: ignore[method-assign]
        async with asyncio.timeout(20):
            while runner.kept_skims.open_fds < members:  # noqa: ASYNC110 - no signal to wait on
                await asyncio.sleep(0.02)
        event = PressureEvent(scope=runner.name, level="some", source=EventSource.MANUAL)
        record = await runner.handle(event)
        return record, sorted(runner.kept_skims.open_by_name())


@pytest.mark.kernel
def test_default_chain_skims_no_oom_score_when_culprit_decides(
    unlimited: ScratchGroup, oom_score_opens: list[str]
) -> None:
    """Twelve processes, culprit takes the larger hog by size. oom_score was opened only as
    part of the full records culprit's finalists need (before: for every process, by the
    scope's warm-up, and kept open for every event's skim); the scope keeps only stat open."""
    big = unlimited.spawn_workload("hog", "24")
    unlimited.spawn_workload("hog", "8")
    for _ in range(10):
        unlimited.spawn(["sleep", "600"], stdout=subprocess.DEVNULL)
    read_in_full: set[int] = set()
    settings = _settings(unlimited, None)
    record, kept = asyncio.run(_one_event(settings, members=12, read_in_full=read_in_full))
    assert record is not None and record.policy == "culprit"
    assert record.pid == big.pid
    assert big.wait(10) == -signal.SIGKILL
    opened = {int(path.split("/")[-2]) for path in oom_score_opens}
    assert opened <= read_in_full
    assert kept == ["stat"]


@pytest.mark.kernel
def test_fallback_policy_gets_a_wider_snapshot_when_the_first_finds_nothing(
    scratch: ScratchGroup, oom_score_opens: list[str]
) -> None:
    """culprit told to ignore every process answers 'no victim'; oom_score, asked next, is
    handed a snapshot that read oom_score, and kills the process the kernel ranks worst."""
    scratch.spawn_workload("hog", "24")
    marked = scratch.spawn_workload("--oom-score-adj", "1000", "hog", "8")
    policies: list[dict[str, Any]] = [
        {"name": "culprit", "options": {"ignore": [".*"]}},
        {"name": "oom_score"},
    ]
    record, kept = asyncio.run(_one_event(_settings(scratch, policies), members=2))
    assert record is not None and record.policy == "oom_score"
    assert record.pid == marked.pid
    assert marked.wait(10) == -signal.SIGKILL
    assert any(path.endswith(f"/{marked.pid}/oom_score") for path in oom_score_opens)
    assert kept == ["oom_score", "stat"]


def test_a_policy_that_needs_nothing_more_shares_the_previous_stage() -> None:
    """Stages: culprit's plan alone, then culprit's and oom_score's; a cgroup-only policy
    after them adds nothing, so its stage is the same object (the chain scans no more)."""

    class CgroupsOnly:
        def scan_key(self) -> object:
            return NO_PROCESSES

    culprit = CulpritPolicy(CulpritOptions())
    oom_score = OomScorePolicy(OomScoreOptions())
    first, second, third = plan_stages([culprit, oom_score, CgroupsOnly()])
    assert first is not None and second is not None
    assert first.skim_files == ("stat",)
    assert second.skim_files == ("stat", "oom_score")
    assert third is second
