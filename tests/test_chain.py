"""The policy chain: time limits, failures, garbage, disabling, guard rejections, counters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs

from pressured.config import GuardSettings, PolicySettings
from pressured.errors import ConfigError
from pressured.events import VictimKind
from pressured.guard import Guard
from pressured.policies.base import BasePolicy, Decision, NoOptions, Policy, Victim
from pressured.policies.chain import ChainLink, FailureKind, PolicyChain, malformed
from pressured.policies.registry import IMPORT_STRING, PolicySource
from pressured.snapshot import Snapshot
from pressured.testing import make_process, make_snapshot

RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]


class KillFirst(BasePolicy[NoOptions]):
    """Kills the first candidate: the fallback that proves the next policy decided."""

    name: ClassVar[str] = "kill_first"

    async def __call__(self, snapshot: Snapshot) -> Decision:
        return Decision.kill(Victim.process(snapshot.candidates[0], "first"))


class Raiser(BasePolicy[NoOptions]):
    name: ClassVar[str] = "raiser"

    async def __call__(self, snapshot: Snapshot) -> Decision:
        raise RuntimeError("boom")


class Hang(BasePolicy[NoOptions]):
    name: ClassVar[str] = "hang"

    async def __call__(self, snapshot: Snapshot) -> Decision:
        await asyncio.sleep(60)
        raise AssertionError("not reached")


class Stubborn(BasePolicy[NoOptions]):
    """Swallows the first cancellation, as a badly written plugin might."""

    name: ClassVar[str] = "stubborn"

    async def __call__(self, snapshot: Snapshot) -> Decision:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
        return Decision.no_action("late")


class Returns(BasePolicy[NoOptions]):
    """Returns whatever it was built with."""

    name: ClassVar[str] = "returns"

    def __init__(self, value: object) -> None:
        super().__init__(NoOptions())
        self.value = value

    async def __call__(self, snapshot: Snapshot) -> Decision:
        return self.value  # type: ignore[return-value]


class Counter(BasePolicy[NoOptions]):
    """Fails until told otherwise; counts calls."""

    name: ClassVar[str] = "counter"

    def __init__(self, options: NoOptions) -> None:
        super().__init__(options)
        self.fail = True
        self.calls = 0

    async def __call__(self, snapshot: Snapshot) -> Decision:
        self.calls += 1
        if self.fail:
            raise ValueError("still failing")
        return Decision.no_action("fine now")


def _link(policy: Policy, timeout_s: float = 1.0) -> ChainLink:
    name = getattr(policy, "name", type(policy).__name__)
    return ChainLink(policy, PolicySource(name, type(policy), IMPORT_STRING), timeout_s)


def _chain(*policies: Policy, timeout_s: float = 1.0, disable_after: int = 5) -> PolicyChain:
    return PolicyChain([_link(p, timeout_s) for p in policies], disable_after=disable_after)


def _snapshot() -> Snapshot:
    return make_snapshot(processes=[make_process(10, comm="victim"), make_process(11)])


def _decide(chain: PolicyChain, snapshot: Snapshot | None = None, check: Any = None) -> Any:
    return asyncio.run(chain.decide(snapshot or _snapshot(), check))


def test_first_acting_policy_wins_and_is_named() -> None:
    """The decision carries the name of the policy that made it."""
    result = _decide(_chain(KillFirst(NoOptions())))
    assert result.decision.victims[0].pid == 10
    assert result.decision.policy == "kill_first"


def test_raising_policy_is_logged_and_next_decides() -> None:
    """An exception gives policy.failed (kind raised) and the next policy decides."""
    with capture_logs() as logs:
        result = _decide(_chain(Raiser(NoOptions()), KillFirst(NoOptions())))
    assert result.decision.policy == "kill_first"
    assert result.failures[0].kind == "raised"
    failed = [e for e in logs if e["event"] == "policy.failed"]
    assert failed[0]["policy"] == "raiser"
    assert "RuntimeError: boom" in failed[0]["detail"]


def test_hanging_policy_times_out_and_next_decides(run_async: RunAsync) -> None:
    """A policy past its time limit counts as a timeout; the next policy decides (both loops)."""
    chain = PolicyChain([_link(Hang(NoOptions()), 0.05), _link(KillFirst(NoOptions()))])
    result = run_async(chain.decide(_snapshot()))
    assert result.failures[0].kind == "timeout"
    assert result.decision.policy == "kill_first"


def test_policy_swallowing_cancellation_cannot_hold_the_chain(run_async: RunAsync) -> None:
    """Even a policy that ignores cancellation is left behind at its time limit."""
    chain = PolicyChain([_link(Stubborn(NoOptions()), 0.05), _link(KillFirst(NoOptions()))])

    async def scenario() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await chain.decide(_snapshot())
        elapsed = loop.time() - started
        await asyncio.sleep(0.3)  # let the abandoned call finish before the loop closes
        return result, elapsed

    result, elapsed = run_async(scenario())
    assert result.decision.policy == "kill_first"
    assert elapsed < 0.2


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        "kill pid 1",
        Decision(victims=[Victim(VictimKind.PROCESS, "x", pid=10)], reason="list"),  # type: ignore[arg-type]
        Decision(victims=(10,), reason="not a victim"),  # type: ignore[arg-type]
        Decision.kill(Victim(VictimKind.PROCESS, "x", pid="10")),  # type: ignore[arg-type]
        Decision.kill(Victim(VictimKind.PROCESS, "x", pid=None)),
        Decision.kill(Victim(VictimKind.PROCESS, "x", pid=True)),
        Decision.kill(Victim(VictimKind.PROCESS, "x", pid=10, start_time="0")),  # type: ignore[arg-type]
        Decision.kill(Victim(VictimKind.CGROUP, "x", cgroup=None)),
        Decision.kill(Victim("process", "x", pid=10)),  # type: ignore[arg-type]
    ],
    ids=[
        "none",
        "string",
        "victims-list",
        "victim-int",
        "pid-str",
        "pid-none",
        "pid-bool",
        "start-time-str",
        "cgroup-none",
        "kind-str",
    ],
)
def test_garbage_is_invalid_and_next_decides(garbage: object) -> None:
    """A malformed answer counts as 'invalid' and the next policy decides."""
    with capture_logs() as logs:
        result = _decide(_chain(Returns(garbage), KillFirst(NoOptions())))
    assert result.failures[0].kind == "invalid"
    assert result.decision.policy == "kill_first"
    assert any(e["event"] == "policy.failed" and e["failure"] == "invalid" for e in logs)


def test_sync_call_counts_as_raised() -> None:
    """A policy whose __call__ is not a coroutine fails as 'raised', without crashing."""

    class Sync:
        name = "sync"

        def __call__(self, snapshot: Snapshot) -> Decision:
            return Decision.no_action("sync")

    result = _decide(_chain(Sync(), KillFirst(NoOptions())))  # type: ignore[arg-type]
    assert result.failures[0].kind == "raised"
    assert result.decision.policy == "kill_first"


def test_disabled_after_repeated_failures() -> None:
    """Five consecutive failures disable a policy with a critical policy.disabled line."""
    failing = Counter(NoOptions())
    chain = _chain(failing, KillFirst(NoOptions()))
    with capture_logs() as logs:
        for _ in range(7):
            _decide(chain)
    assert failing.calls == 5
    assert chain.links[0].disabled
    disabled = [e for e in logs if e["event"] == "policy.disabled"]
    assert len(disabled) == 1
    assert disabled[0]["log_level"] == "critical"
    assert disabled[0]["policy"] == "counter"


def test_success_resets_the_failure_streak() -> None:
    """A good answer between failures keeps the policy enabled."""
    flaky = Counter(NoOptions())
    chain = _chain(flaky, disable_after=3)
    for _ in range(2):
        _decide(chain)
    flaky.fail = False
    _decide(chain)
    flaky.fail = True
    for _ in range(2):
        _decide(chain)
    assert not chain.links[0].disabled
    assert chain.links[0].consecutive_failures == 2


def test_every_policy_disabled_says_so() -> None:
    """With every policy disabled the chain answers no action and says why."""
    chain = _chain(Raiser(NoOptions()), disable_after=1)
    _decide(chain)
    result = _decide(chain)
    assert not result.decision.acts
    assert "every policy is disabled" in result.decision.reason


def test_guard_rejection_is_logged_and_next_policy_decides() -> None:
    """A victim the guard refuses is logged; the next policy is asked."""
    snapshot = make_snapshot(processes=[make_process(10, comm="sshd", uid=0), make_process(11)])

    class KillSshd(BasePolicy[NoOptions]):
        name: ClassVar[str] = "kill_sshd"

        async def __call__(self, snapshot: Snapshot) -> Decision:
            return Decision.kill(Victim.process(snapshot.candidates[0], "sshd"))

    class KillSecond(BasePolicy[NoOptions]):
        name: ClassVar[str] = "kill_second"

        async def __call__(self, snapshot: Snapshot) -> Decision:
            return Decision.kill(Victim.process(snapshot.candidates[1], "second"))

    guard = Guard(GuardSettings(protect_names=("sshd",)), self_pid=snapshot.self_pid)
    with capture_logs() as logs:
        result = _decide(
            _chain(KillSshd(NoOptions()), KillSecond(NoOptions())), snapshot, guard.check
        )
    assert result.decision.victims[0].pid == 11
    assert result.rejected[0][0] == "kill_sshd"
    rejected = [e for e in logs if e["event"] == "policy.victim_rejected"]
    assert "protected name" in rejected[0]["why"]


def test_guard_that_raises_rejects_the_victim() -> None:
    """A guard error refuses the victim instead of letting it through."""

    def broken(victim: Victim, snapshot: Snapshot) -> str | None:
        raise KeyError("guard bug")

    result = _decide(_chain(KillFirst(NoOptions())), check=broken)
    assert not result.decision.acts
    assert "guard check failed" in result.rejected[0][2]


def test_rejection_does_not_count_as_failure() -> None:
    """A refused victim is the guard's business, not the policy's failure."""
    chain = _chain(KillFirst(NoOptions()))
    _decide(chain, check=lambda victim, snapshot: "no")
    assert chain.links[0].consecutive_failures == 0
    assert chain.stats()[0].rejected_victims == 1


def test_stats_count_calls_failures_and_duration() -> None:
    """stats() reports calls, failures by kind, disabled and durations per policy."""
    chain = _chain(Raiser(NoOptions()), Returns(None), KillFirst(NoOptions()), disable_after=2)
    for _ in range(3):
        _decide(chain)
    raiser, garbage, good = chain.stats()
    assert (raiser.calls, raiser.failures["raised"], raiser.disabled) == (2, 2, True)
    assert garbage.failures["invalid"] == 2
    assert garbage.failures_total == 2
    assert (good.calls, good.wins, good.failures_total) == (3, 3, 0)
    assert good.last_duration_s >= 0
    assert good.total_duration_s >= good.last_duration_s
    assert set(raiser.failures) == {k.value for k in FailureKind}


def test_no_action_keeps_every_reason() -> None:
    """When nobody acts, the reason lists each policy's own."""
    chain = _chain(Returns(Decision.no_action("calm")), Returns(Decision.no_action("quiet")))
    result = _decide(chain)
    assert result.decision.reason == "returns: calm; returns: quiet"


def test_malformed_accepts_a_good_decision() -> None:
    """malformed() says None for a well-formed decision."""
    assert malformed(Decision.kill(Victim.process(make_process(5), "ok"))) is None


def test_from_settings_builds_links_with_timeouts() -> None:
    """from_settings resolves each policy and keeps its time limit."""
    chain = PolicyChain.from_settings(
        [PolicySettings(name="oom_score", timeout_ms=250), PolicySettings(name="largest")],
        "scopes.0.policies",
    )
    assert [link.name for link in chain.links] == ["oom_score", "largest"]
    assert chain.links[0].timeout_s == 0.25


def test_from_settings_names_the_bad_field() -> None:
    """A bad option is reported with its full dotted path."""
    with pytest.raises(ConfigError) as info:
        PolicyChain.from_settings(
            [
                PolicySettings(name="largest"),
                PolicySettings(name="largest", options={"min_mib": -1}),
            ],
            "scopes.2.policies",
        )
    assert info.value.field == "scopes.2.policies.1.options.min_mib"


def test_aclose_closes_policies() -> None:
    """aclose() calls each policy's aclose once."""
    closed: list[str] = []

    class Closing(KillFirst):
        async def aclose(self) -> None:
            closed.append("x")

    asyncio.run(_chain(Closing(NoOptions())).aclose())
    assert closed == ["x"]


def test_kill_without_victims_is_refused_at_once() -> None:
    """Decision.kill() with no victim raises a clear error instead of an IndexError."""
    with pytest.raises(ValueError, match="no_action"):
        Decision.kill()
