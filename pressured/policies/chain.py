"""A scope's policy chain: ask each policy in turn; the first that returns acceptable victims
wins.

Each call is time-limited. A policy that raises, hangs or returns garbage is logged
(``policy.failed``), counted and skipped, and the next policy decides; after
``disable_after`` consecutive failures it is disabled (``policy.disabled``, logged at critical
level) until the chain is rebuilt by a reload. Every victim a policy returns goes through the
guard callback; refused ones are logged (``policy.victim_rejected``) and the next policy is
asked when none is left. The chain never raises to the controller for a policy's fault.

A policy runs in its own task so that even one that swallows cancellation cannot hold the
chain past its time limit: on timeout the task is cancelled and abandoned (kept referenced
until it ends). Synchronous blocking inside a policy cannot be interrupted by asyncio; the
controller's watchdog is the answer to that.

:meth:`PolicyChain.stats` gives per-policy counters (calls, failures by kind, disabled, last
duration) for metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import structlog

from pressured import family
from pressured.config import PolicySettings
from pressured.events import VictimKind
from pressured.policies.base import Decision, Policy, Victim
from pressured.policies.registry import PolicySource, instantiate
from pressured.snapshot import Snapshot

log = structlog.get_logger("pressured.policy")

CLOSE_TIMEOUT_S = 2.0
"""How long one policy's ``aclose`` may take: a plugin's close that hangs must not hold the
daemon's stop (a second SIGTERM is ignored while stopping) until the supervisor's SIGKILL."""
DISABLE_AFTER_FAILURES = 5

VictimCheck = Callable[[Victim, Snapshot], "str | None"]
"""The guard: returns why a victim must be rejected, or None."""
Widen = Callable[[int, Snapshot], Awaitable[Snapshot]]
"""(index of the policy about to be asked, the snapshot so far) -> the snapshot to ask it with."""


class FailureKind(StrEnum):
    RAISED = "raised"
    """The policy raised an exception."""
    TIMEOUT = "timeout"
    """No answer within the policy's time limit."""
    INVALID = "invalid"
    """It answered with something that is not a well-formed :class:`Decision`."""


@dataclass
class ChainLink:
    """One policy in a chain, with its mutable counters."""

    policy: Policy
    source: PolicySource
    timeout_s: float
    consecutive_failures: int = 0
    failures: int = 0
    failures_by_kind: dict[FailureKind, int] = field(
        default_factory=lambda: dict.fromkeys(FailureKind, 0)
    )
    calls: int = 0
    decisions: int = 0
    """Well-formed decisions returned (acting or not)."""
    wins: int = 0
    """Decisions whose victims (some of them) passed the guard: the chain's answer."""
    rejected_victims: int = 0
    disabled: bool = False
    last_duration_s: float = 0.0
    total_duration_s: float = 0.0

    @property
    def name(self) -> str:
        return self.source.name


@dataclass(frozen=True, slots=True)
class PolicyStats:
    """A read-only copy of one link's counters, for metrics and ``status``."""

    policy: str
    origin: str
    calls: int
    decisions: int
    wins: int
    failures: Mapping[str, int]
    """Failures by kind: ``raised``, ``timeout``, ``invalid``."""
    consecutive_failures: int
    rejected_victims: int
    disabled: bool
    last_duration_s: float
    total_duration_s: float

    @property
    def failures_total(self) -> int:
        return sum(self.failures.values())


@dataclass(frozen=True, slots=True)
class PolicyFailure:
    policy: str
    kind: str
    """``raised``, ``timeout`` or ``invalid`` (a :class:`FailureKind`)."""
    detail: str


@dataclass(frozen=True, slots=True)
class ChainResult:
    decision: Decision
    """The winning decision (``policy`` filled in) or a no-action decision."""
    failures: tuple[PolicyFailure, ...] = ()
    rejected: tuple[tuple[str, Victim, str], ...] = ()
    """(policy, victim, why the guard refused it)."""
    durations_s: dict[str, float] = field(default_factory=dict)
    widened: Snapshot | None = None
    """The wider snapshot a later policy was asked with (see ``PolicyChain.decide``), or None
    when every policy asked saw the snapshot the chain was given."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def malformed(decision: object) -> str | None:
    """Why ``decision`` is not a well-formed :class:`Decision`, or None when it is.

    Checked in the chain because plugins are not type-checked: a victim with a pid given as a
    string, a cgroup victim without a path or a list instead of a tuple must count as the
    policy's failure, not reach the guard or the actuator.
    """
    if not isinstance(decision, Decision):
        return f"returned {type(decision).__name__}, not a Decision"
    if not isinstance(decision.victims, tuple):
        return f"Decision.victims is a {type(decision.victims).__name__}, not a tuple"
    if not isinstance(decision.reason, str):
        return "Decision.reason is not a string"
    for index, victim in enumerate(decision.victims):
        where = f"victim {index}"
        if not isinstance(victim, Victim):
            return f"{where} is a {type(victim).__name__}, not a Victim"
        if not isinstance(victim.kind, VictimKind):
            return f"{where}: kind {victim.kind!r} is not a VictimKind"
        if victim.kind is VictimKind.PROCESS:
            if not _is_int(victim.pid) or victim.pid is None or victim.pid <= 0:
                return f"{where}: process victim with pid {victim.pid!r}"
            if victim.start_time is not None and not _is_int(victim.start_time):
                return f"{where}: start_time {victim.start_time!r} is not an int"
        elif not isinstance(victim.cgroup, str) or not victim.cgroup:
            return f"{where}: cgroup victim with cgroup {victim.cgroup!r}"
    return None


async def _invoke(policy: Policy, snapshot: Snapshot) -> Any:
    # Awaited inside a task: a policy whose __call__ is not a coroutine raises TypeError here,
    # which counts as 'raised' like any other fault.
    return await policy(snapshot)


class PolicyChain:
    """Policies asked in order; the first acceptable answer wins."""

    def __init__(
        self,
        links: Sequence[ChainLink],
        *,
        disable_after: int = DISABLE_AFTER_FAILURES,
        family: bool = True,
    ) -> None:
        self.links = list(links)
        self.disable_after = disable_after
        self.family = family
        """Expand the chosen process victim to its family (:mod:`pressured.family`)."""
        self._abandoned: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_settings(
        cls,
        policies: Sequence[PolicySettings],
        field_prefix: str,
        *,
        disable_after: int = DISABLE_AFTER_FAILURES,
        family: bool = True,
    ) -> PolicyChain:
        """Load every policy now; ConfigError names ``<prefix>.<index>...`` on failure."""
        links = []
        for index, item in enumerate(policies):
            policy, source = instantiate(item.name, item.options, f"{field_prefix}.{index}")
            links.append(ChainLink(policy, source, item.timeout_ms / 1000))
        return cls(links, disable_after=disable_after, family=family)

    @property
    def wants_history(self) -> bool:
        """Whether a policy here ranks on rates (``wants_history``), so that the first
        snapshot of an episode is worth a short second sample."""
        return any(getattr(link.policy, "wants_history", False) for link in self.links)

    def stats(self) -> tuple[PolicyStats, ...]:
        """A copy of every link's counters, in chain order."""
        return tuple(
            PolicyStats(
                policy=link.name,
                origin=link.source.origin,
                calls=link.calls,
                decisions=link.decisions,
                wins=link.wins,
                failures=MappingProxyType({str(k): v for k, v in link.failures_by_kind.items()}),
                consecutive_failures=link.consecutive_failures,
                rejected_victims=link.rejected_victims,
                disabled=link.disabled,
                last_duration_s=link.last_duration_s,
                total_duration_s=link.total_duration_s,
            )
            for link in self.links
        )

    def _fail(self, link: ChainLink, kind: FailureKind, detail: str, scope: str) -> PolicyFailure:
        link.failures += 1
        link.failures_by_kind[kind] += 1
        link.consecutive_failures += 1
        log.error(
            "policy.failed",
            policy=link.name,
            origin=link.source.origin,
            scope=scope,
            failure=str(kind),
            detail=detail,
            consecutive=link.consecutive_failures,
        )
        if link.consecutive_failures >= self.disable_after and not link.disabled:
            link.disabled = True
            log.critical(
                "policy.disabled",
                policy=link.name,
                origin=link.source.origin,
                scope=scope,
                after_failures=link.consecutive_failures,
                detail="POLICY DISABLED: skipped from now on; fix it and reload the configuration",
            )
        return PolicyFailure(link.name, str(kind), detail)

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        task.cancel()
        self._abandoned.add(task)

        def _done(finished: asyncio.Task[Any]) -> None:
            self._abandoned.discard(finished)
            if not finished.cancelled():
                finished.exception()  # retrieved: no "exception was never retrieved" noise

        task.add_done_callback(_done)

    async def _ask(
        self, link: ChainLink, snapshot: Snapshot
    ) -> tuple[Decision | None, PolicyFailure | None]:
        """Call one policy under its time limit; return its decision or its failure."""
        link.calls += 1
        started = time.perf_counter()
        task = asyncio.create_task(_invoke(link.policy, snapshot), name=f"policy:{link.name}")
        try:
            done, _pending = await asyncio.wait({task}, timeout=link.timeout_s)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            link.last_duration_s = time.perf_counter() - started
            link.total_duration_s += link.last_duration_s
        if not done:
            self._abandon(task)
            detail = f"no answer in {link.timeout_s:g} s"
            return None, self._fail(link, FailureKind.TIMEOUT, detail, snapshot.scope)
        if task.cancelled():
            detail = "cancelled itself"
            return None, self._fail(link, FailureKind.RAISED, detail, snapshot.scope)
        exc = task.exception()
        if exc is not None:
            detail = f"{type(exc).__name__}: {exc}"[:500]
            return None, self._fail(link, FailureKind.RAISED, detail, snapshot.scope)
        decision = task.result()
        problem = malformed(decision)
        if problem is not None:
            return None, self._fail(link, FailureKind.INVALID, problem, snapshot.scope)
        link.consecutive_failures = 0
        link.decisions += 1
        return decision, None

    def _screen(
        self,
        link: ChainLink,
        decision: Decision,
        snapshot: Snapshot,
        check: VictimCheck | None,
        rejected: list[tuple[str, Victim, str]],
    ) -> list[Victim]:
        """The victims the guard accepts; log and record the others."""
        accepted = []
        for victim in decision.victims:
            try:
                why = check(victim, snapshot) if check else None
            except Exception as exc:
                # Refuse rather than kill on a guard that could not decide.
                why = f"guard check failed: {type(exc).__name__}: {exc}"
            if why is None:
                accepted.append(victim)
                continue
            link.rejected_victims += 1
            rejected.append((link.name, victim, why))
            log.warning(
                "policy.victim_rejected",
                policy=link.name,
                scope=snapshot.scope,
                victim=victim.describe(),
                why=why,
            )
        return accepted

    def _with_family(self, victim: Victim, snapshot: Snapshot, check: VictimCheck | None) -> Victim:
        """The accepted victim grown to its family where the guard accepts that too; the
        victim as chosen otherwise (a fault here never costs the kill)."""

        def group_allowed(path: str, snap: Snapshot) -> str | None:
            if check is None:
                return None
            return check(Victim(kind=VictimKind.CGROUP, reason="family", cgroup=path), snap)

        try:
            expanded = family.expand(victim, snapshot, group_allowed)
            why = None if expanded is victim or check is None else check(expanded, snapshot)
        except Exception as exc:
            log.error("policy.family_failed", victim=victim.describe(), error=repr(exc))
            return victim
        if why is not None:
            log.warning(
                "policy.family_rejected",
                scope=snapshot.scope,
                victim=victim.describe(),
                family=expanded.describe(),
                why=why,
            )
            return victim
        return expanded

    async def decide(
        self,
        snapshot: Snapshot,
        check: VictimCheck | None = None,
        widen: Widen | None = None,
    ) -> ChainResult:
        """Ask each enabled policy in order; return the first decision with accepted victims.

        ``widen(index, snapshot)`` is awaited before policy ``index`` (after the first) is
        asked, and returns the snapshot to ask it with: the same one, or one that also read
        what that policy needs (a scan in stages, :func:`pressured.scan.plan.plan_stages`).
        """
        given = snapshot
        failures: list[PolicyFailure] = []
        rejected: list[tuple[str, Victim, str]] = []
        durations: dict[str, float] = {}
        reasons: list[str] = []
        for index, link in enumerate(self.links):
            if link.disabled:
                continue
            if widen is not None and index:
                snapshot = await widen(index, snapshot)
            decision, failure = await self._ask(link, snapshot)
            durations[link.name] = link.last_duration_s
            if failure is not None:
                failures.append(failure)
                continue
            assert decision is not None  # noqa: S101 - _ask returns one or the other
            reasons.append(f"{link.name}: {decision.reason}")
            accepted = self._screen(link, decision, snapshot, check, rejected)
            if accepted and self.family:
                accepted = [self._with_family(victim, snapshot, check) for victim in accepted]
            if accepted:
                link.wins += 1
                chosen = Decision(tuple(accepted), decision.reason, decision.ranking, link.name)
                wider = None if snapshot is given else snapshot
                return ChainResult(chosen, tuple(failures), tuple(rejected), durations, wider)
        if not any(not link.disabled for link in self.links):
            reasons.append("every policy is disabled")
        reason = "; ".join(reasons) or "no policy answered"
        none = Decision(victims=(), reason=reason, policy="")
        wider = None if snapshot is given else snapshot
        return ChainResult(none, tuple(failures), tuple(rejected), durations, wider)

    async def aclose(self) -> None:
        """Close every policy that has ``aclose`` and cancel abandoned calls."""
        for task in list(self._abandoned):
            task.cancel()
        for link in self.links:
            close = getattr(link.policy, "aclose", None)
            if close is None:
                continue
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await close()
            except TimeoutError:
                log.warning(
                    "policy.close_failed",
                    policy=link.name,
                    error=f"did not close within {CLOSE_TIMEOUT_S:g} s: left behind",
                )
            except Exception as exc:
                log.warning("policy.close_failed", policy=link.name, error=repr(exc))
