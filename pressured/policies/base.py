"""The policy contract: a policy looks at a :class:`~pressured.snapshot.Snapshot` and returns a
:class:`Decision`. It never signals, never writes cgroup files and never sees the loop or a
file descriptor: only the actuator acts, which keeps dry-run honest and policies testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

from pressured.events import VictimKind
from pressured.kernel.procfs import ProcessRecord
from pressured.scan.plan import PolicyNeed
from pressured.snapshot import CgroupRecord, Snapshot

Figure = float | int | str


@dataclass(frozen=True, slots=True)
class Victim:
    """One process or cgroup a policy wants killed, with its reason and the figures behind it."""

    kind: VictimKind
    reason: str
    pid: int | None = None
    start_time: int | None = None
    """With ``pid``: the identity the actuator re-checks before signalling."""
    cgroup: str | None = None
    figures: dict[str, Figure] = field(default_factory=dict)
    family: tuple[tuple[int, int], ...] = ()
    """For a process victim: further processes ``(pid, start_time)`` that share its cause
    (its descendants in one session, process group or leaf cgroup) and die with it."""

    @classmethod
    def process(cls, record: ProcessRecord, reason: str, **figures: Figure) -> Victim:
        return cls(
            kind=VictimKind.PROCESS,
            reason=reason,
            pid=record.pid,
            start_time=record.start_time,
            cgroup=record.cgroup,
            figures=dict(figures),
        )

    @classmethod
    def group(cls, record: CgroupRecord, reason: str, **figures: Figure) -> Victim:
        return cls(kind=VictimKind.CGROUP, reason=reason, cgroup=record.path, figures=dict(figures))

    def describe(self) -> str:
        if self.kind is VictimKind.CGROUP:
            return f"cgroup {self.cgroup}"
        return f"pid {self.pid}"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy returns: victims in order of preference, or none, always with a reason."""

    victims: tuple[Victim, ...]
    reason: str
    ranking: tuple[tuple[str, Figure], ...] = ()
    """Optional evidence: the top of the policy's ranking as (target, score) pairs."""
    policy: str = ""
    """Filled in by the chain with the name of the policy that decided."""

    @classmethod
    def kill(
        cls, *victims: Victim, reason: str = "", ranking: tuple[tuple[str, Figure], ...] = ()
    ) -> Decision:
        """Kill ``victims`` (best first). The reason defaults to the first victim's."""
        if not victims:
            raise ValueError("Decision.kill() needs at least one victim; use Decision.no_action()")
        return cls(victims=tuple(victims), reason=reason or victims[0].reason, ranking=ranking)

    @classmethod
    def no_action(cls, reason: str) -> Decision:
        return cls(victims=(), reason=reason)

    @property
    def acts(self) -> bool:
        return bool(self.victims)


class NoOptions(BaseModel):
    """Options model of a policy that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyOptions(BaseModel):
    """Base for policy option models: frozen, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


OptionsT = TypeVar("OptionsT", bound=BaseModel)
OptionsT_co = TypeVar("OptionsT_co", bound=BaseModel, covariant=True)


@runtime_checkable
class Policy(Protocol):
    """**Protocol:** an async callable that chooses victims from a snapshot.

    Implementations declare ``name`` and an ``Options`` pydantic model as class attributes and
    take the parsed options in ``__init__``. Calls are time-limited by the chain; a policy that
    raises, hangs or returns something that is not a :class:`Decision` is skipped and counted.
    """

    name: ClassVar[str]

    # Read-only in the Protocol, so a subclass's ``Options = MyOptions`` (a narrower model
    # class) still satisfies it under mypy; the registry checks it on the class at load time.
    @property
    def Options(self) -> type[BaseModel]: ...

    async def __call__(self, snapshot: Snapshot) -> Decision: ...


class BasePolicy(Generic[OptionsT]):
    """Convenience base: stores typed options as ``self.options``.

    Subclass it, set ``name`` and ``Options``, implement ``async def __call__``.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    wants_history: ClassVar[bool] = False
    """True for a policy that ranks on growth or fault rates (:attr:`Snapshot.previous`): the
    scope then takes a short second sample when it has no recent history."""

    def __init__(self, options: OptionsT) -> None:
        self.options = options

    async def __call__(self, snapshot: Snapshot) -> Decision:
        raise NotImplementedError

    def scan_key(self) -> PolicyNeed:
        """What this policy ranks on (:mod:`pressured.scan.plan`), so the scan may read full
        records only for its finalists. None (the default) asks for a full scan."""
        return None

    async def aclose(self) -> None:
        """Release what the policy holds (optional). Called once at shutdown or reload."""
