"""A scope's policy chain: ask each policy in turn; the first that returns acceptable victims
wins. Each call is time-limited; a policy that raises, hangs or returns garbage is logged,
counted and skipped, and after repeated failures disabled. The chain never raises to the
controller for a policy's fault.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from pressured.config import PolicySettings
from pressured.policies.base import Decision, Policy, Victim
from pressured.policies.registry import PolicySource, instantiate
from pressured.snapshot import Snapshot

log = structlog.get_logger("pressured.policy")

DISABLE_AFTER_FAILURES = 5

VictimCheck = Callable[[Victim, Snapshot], "str | None"]
"""The guard: returns why a victim must be rejected, or None."""


@dataclass
class ChainLink:
    policy: Policy
    source: PolicySource
    timeout_s: float
    consecutive_failures: int = 0
    failures: int = 0
    calls: int = 0
    disabled: bool = False
    last_duration_s: float = 0.0

    @property
    def name(self) -> str:
        return self.source.name


@dataclass(frozen=True, slots=True)
class PolicyFailure:
    policy: str
    kind: str
    """``raised``, ``timeout`` or ``invalid``."""
    detail: str


@dataclass(frozen=True, slots=True)
class ChainResult:
    decision: Decision
    """The winning decision (``policy`` filled in) or a no-action decision."""
    failures: tuple[PolicyFailure, ...] = ()
    rejected: tuple[tuple[str, Victim, str], ...] = ()
    """(policy, victim, why the guard refused it)."""
    durations_s: dict[str, float] = field(default_factory=dict)


class PolicyChain:
    def __init__(self, links: Sequence[ChainLink], *, disable_after: int = DISABLE_AFTER_FAILURES):
        self.links = list(links)
        self.disable_after = disable_after

    @classmethod
    def from_settings(cls, policies: Sequence[PolicySettings], field_prefix: str) -> PolicyChain:
        """Load every policy now; ConfigError names ``<prefix>.<index>...`` on failure."""
        links = []
        for index, item in enumerate(policies):
            policy, source = instantiate(item.name, item.options, f"{field_prefix}.{index}")
            links.append(ChainLink(policy, source, item.timeout_ms / 1000))
        return cls(links)

    def _fail(self, link: ChainLink, kind: str, detail: str) -> PolicyFailure:
        link.failures += 1
        link.consecutive_failures += 1
        log.error(
            "policy.failed",
            policy=link.name,
            failure=kind,
            detail=detail,
            consecutive=link.consecutive_failures,
        )
        if link.consecutive_failures >= self.disable_after:
            link.disabled = True
            log.critical(
                "policy.disabled",
                policy=link.name,
                after_failures=link.consecutive_failures,
                detail="skipped from now on; fix it and reload",
            )
        return PolicyFailure(link.name, kind, detail)

    async def decide(self, snapshot: Snapshot, check: VictimCheck | None = None) -> ChainResult:
        failures: list[PolicyFailure] = []
        rejected: list[tuple[str, Victim, str]] = []
        durations: dict[str, float] = {}
        last_reason = "no policy enabled"
        for link in self.links:
            if link.disabled:
                continue
            link.calls += 1
            started = time.perf_counter()
            try:
                async with asyncio.timeout(link.timeout_s):
                    decision = await link.policy(snapshot)
            except TimeoutError:
                failures.append(self._fail(link, "timeout", f"no answer in {link.timeout_s:g} s"))
                continue
            except Exception as exc:
                failures.append(self._fail(link, "raised", repr(exc)[:500]))
                continue
            finally:
                link.last_duration_s = durations[link.name] = time.perf_counter() - started
            if not isinstance(decision, Decision) or not all(
                isinstance(victim, Victim) for victim in decision.victims
            ):
                failures.append(
                    self._fail(
                        link, "invalid", f"returned {type(decision).__name__}, not a Decision"
                    )
                )
                continue
            link.consecutive_failures = 0
            accepted = []
            for victim in decision.victims:
                why = check(victim, snapshot) if check else None
                if why is None:
                    accepted.append(victim)
                else:
                    rejected.append((link.name, victim, why))
                    log.warning(
                        "policy.victim_rejected",
                        policy=link.name,
                        victim=victim.describe(),
                        why=why,
                    )
            last_reason = f"{link.name}: {decision.reason}"
            if accepted:
                chosen = Decision(tuple(accepted), decision.reason, decision.ranking, link.name)
                return ChainResult(chosen, tuple(failures), tuple(rejected), durations)
        none = Decision(victims=(), reason=last_reason, policy="")
        return ChainResult(none, tuple(failures), tuple(rejected), durations)

    async def aclose(self) -> None:
        for link in self.links:
            close = getattr(link.policy, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception as exc:
                log.warning("policy.close_failed", policy=link.name, error=repr(exc))
