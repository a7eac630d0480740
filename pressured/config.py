"""pressured's configuration: one frozen pydantic tree, unknown keys are errors.

Precedence, lowest first: built-in defaults < TOML file < ``PRESSURED_*`` environment <
command line. ``load_settings`` is the one entry point; every failure becomes a
:class:`~pressured.errors.ConfigError` whose ``field`` is a dotted path (``scopes.0.levels.1``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pressured.errors import ConfigError
from pressured.kernel.psi import Resource, TriggerSpec

LoopName = Literal["uvloop", "asyncio"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LevelSettings(_Model):
    """One PSI trigger level: fire when tasks stalled ``threshold_ms`` within ``window_ms``."""

    name: str = Field(min_length=1, description="Name policies see in the event (e.g. 'some').")
    kind: Literal["some", "full"] = "some"
    threshold_ms: float = Field(gt=0, description="Stall time within the window that fires.")
    window_ms: float = Field(ge=500, le=10_000, description="Tracking window (500 ms .. 10 s).")

    @model_validator(mode="after")
    def _threshold_within_window(self) -> LevelSettings:
        if self.threshold_ms > self.window_ms:
            raise ValueError(
                f"threshold_ms ({self.threshold_ms:g}) must not exceed window_ms "
                f"({self.window_ms:g})"
            )
        return self

    def trigger(self) -> TriggerSpec:
        return TriggerSpec(
            Resource.MEMORY,
            self.kind,
            round(self.threshold_ms * 1000),
            round(self.window_ms * 1000),
        )


def _default_levels() -> tuple[LevelSettings, ...]:
    # lmkd's defaults (some 70 ms / 1 s, full 700 ms / 1 s). Without CAP_SYS_RESOURCE the
    # kernel wants 2 s multiples: they become some 140/2000 and full 1400/2000 at start-up.
    return (
        LevelSettings(name="some", kind="some", threshold_ms=70, window_ms=1000),
        LevelSettings(name="full", kind="full", threshold_ms=700, window_ms=1000),
    )


class AvailabilitySettings(_Model):
    """Polling availability monitor (off by default: PSI triggers need no polling)."""

    enabled: bool = False
    mem_available_percent: float = Field(
        default=5.0,
        ge=0,
        le=100,
        description="System scope: act when MemAvailable is below this share of MemTotal ...",
    )
    swap_free_percent: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="... and SwapFree below this share of SwapTotal (earlyoom's rule; a host "
        "without swap counts as swap exhausted).",
    )
    usage_percent: float = Field(
        default=95.0,
        gt=0,
        le=100,
        description="Cgroup scope: act when usage reaches this share of the limit.",
    )
    min_interval_ms: float = Field(default=100, ge=10)
    max_interval_ms: float = Field(default=1000, ge=10)
    level: str = "memory"

    @model_validator(mode="after")
    def _interval_order(self) -> AvailabilitySettings:
        if self.min_interval_ms > self.max_interval_ms:
            raise ValueError("min_interval_ms must not exceed max_interval_ms")
        return self


class PolicySettings(_Model):
    """One link of a policy chain: a built-in name, an entry point or ``module:Class``."""

    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    timeout_ms: float = Field(default=500, gt=0, le=60_000)


def _default_policies() -> tuple[PolicySettings, ...]:
    # The culprit first (what is taking memory now, by family), then the kernel's badness as
    # the safety net should the first fail or time out (docs/policies.md states the rule).
    return (PolicySettings(name="culprit"), PolicySettings(name="oom_score"))


class ScopeSettings(_Model):
    """What to watch and whom to kill: the whole system or one cgroup v2 path."""

    cgroup: str | None = Field(
        default=None, description="cgroup v2 path such as /jobs; None watches the whole system."
    )
    memcg_v1: str | None = Field(
        default=None,
        description="Hybrid hosts: the v1 memory cgroup path holding this scope's accounting "
        "(default: the same path as 'cgroup' when it exists).",
    )
    levels: tuple[LevelSettings, ...] = Field(default_factory=_default_levels)
    availability: AvailabilitySettings = Field(default_factory=AvailabilitySettings)
    policies: tuple[PolicySettings, ...] = Field(default_factory=_default_policies)
    recheck_interval_ms: float = Field(
        default=100, ge=10, description="Re-evaluate this often while an episode lasts."
    )
    recheck_refaults_per_s: float = Field(
        default=1000,
        gt=0,
        description="During an episode, re-evaluate when the scope refaults at least this many "
        "pages per second (a thrashing 64 MiB group refaults 100,000+; a quiet one none).",
    )
    starvation_check_s: float = Field(
        default=10.0,
        description="Every this many seconds compare the scope's cumulative stall with the "
        "trigger events seen; stall growth without events means something reading the "
        "pressure file is starving unprivileged triggers. 0 turns the check off; shorter than "
        "10 s is refused because the check itself would starve them. Skipped when the daemon "
        "has CAP_SYS_RESOURCE (privileged triggers cannot be starved).",
    )

    @field_validator("starvation_check_s")
    @classmethod
    def _rare_enough(cls, value: float) -> float:
        if value != 0 and value < 10:
            raise ValueError(
                "must be 0 (off) or at least 10 s: reading the pressure file more "
                "often starves unprivileged triggers"
            )
        return value

    @field_validator("cgroup", "memcg_v1")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute cgroup path starting with '/', not {value!r}")
        if ".." in value.split("/"):
            raise ValueError("must not contain '..'")
        return "/" + value.strip("/") if value.strip("/") else "/"

    @model_validator(mode="after")
    def _levels_unique(self) -> ScopeSettings:
        names = [level.name for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"level names must be unique, got {names}")
        if not self.levels and not self.availability.enabled:
            raise ValueError("a scope needs at least one PSI level or the availability monitor")
        if not self.policies:
            raise ValueError("a scope needs at least one policy")
        return self

    @property
    def name(self) -> str:
        return self.cgroup or "system"


DEFAULT_PROTECTED_EXECUTABLES = (
    "/usr/sbin/sshd",
    "/usr/bin/sshd",
    "/usr/lib/openssh/sshd-session",
    "/usr/libexec/openssh/sshd-session",
    "/usr/lib/openssh/sshd-auth",
    "/usr/libexec/openssh/sshd-auth",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
    "/lib/systemd/systemd-journald",
    "/usr/lib/systemd/systemd-journald",
    "/lib/systemd/systemd-logind",
    "/usr/lib/systemd/systemd-logind",
    "/sbin/init",
    "/usr/bin/containerd",
    "/usr/bin/dockerd",
    "/usr/bin/kubelet",
    "/usr/local/bin/kubelet",
)
"""Binaries whose processes are never killed: matched by the file's device and inode,
resolved at start-up (paths missing on this host are skipped), never by a process's name."""

DEFAULT_PROTECTED_CGROUPS = (
    "/init.scope",
    "/system.slice/ssh.service",
    "/system.slice/sshd.service",
)


class ProtectRule(_Model):
    """One protection rule: every field given must match. ``name`` and ``cmdline`` are chosen
    by the process itself, so a rule needs at least one of ``exe``, ``uid`` or ``cgroup`` (what
    a process cannot forge) beside them."""

    name: str | None = Field(default=None, description="Exact process name (comm).")
    cmdline: str | None = Field(default=None, description="Regex searched in the command line.")
    exe: str | None = Field(
        default=None,
        description="Executable path, matched by device and inode (resolved at start-up).",
    )
    uid: int | None = Field(default=None, ge=0, description="Real user id.")
    cgroup: str | None = Field(
        default=None, description="cgroup v2 path: the process is in it or below it."
    )

    @field_validator("cmdline")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} does not compile: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _anchored_in_identity(self) -> ProtectRule:
        if self.exe is None and self.uid is None and self.cgroup is None:
            raise ValueError(
                "a protection rule needs exe, uid or cgroup: name and cmdline are chosen by "
                "the process itself (a thrasher can call itself 'sshd')"
            )
        return self


class GuardSettings(_Model):
    """What is never killed, and how often anything may be.

    Protection is decided from what a process cannot forge: its executable (device and
    inode), its uid and its cgroup. Names and command lines only count together with one of
    those (``protect`` rules), or for root-owned processes (the older ``protect_names`` and
    ``protect_cmdline``)."""

    protect_executables: tuple[str, ...] = Field(
        default=DEFAULT_PROTECTED_EXECUTABLES,
        description="Executable paths whose processes are never chosen (matched by device and "
        "inode of the file, resolved at start-up; missing paths are skipped).",
    )
    protect_cgroups: tuple[str, ...] = Field(
        default=DEFAULT_PROTECTED_CGROUPS,
        description="cgroup v2 paths whose processes (and subgroups) are protected.",
    )
    protect_uids: tuple[int, ...] = ()
    protect: tuple[ProtectRule, ...] = Field(
        default=(),
        description="Rules combining a name or cmdline with exe, uid or cgroup.",
    )
    protect_names: tuple[str, ...] = Field(
        default=(),
        description="Exact process names (comm) protected when the process is root-owned "
        "(uid 0): a name alone is forgeable. Prefer 'protect_executables' or 'protect' rules.",
    )
    protect_cmdline: tuple[str, ...] = Field(
        default=(),
        description="Regular expressions searched in the command line, for root-owned "
        "processes only (like protect_names).",
    )
    cooldown_ms: float = Field(
        default=1000,
        ge=0,
        description="Settle delay after a victim is confirmed dead before the next kill.",
    )
    max_kills_per_minute: int = Field(default=10, ge=1)

    @field_validator("protect_cmdline")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {index} ({pattern!r}) does not compile: {exc}") from None
        return patterns

    @field_validator("protect_executables")
    @classmethod
    def _absolute_paths(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is not an absolute path")
        return paths


class KillSettings(_Model):
    family: bool = Field(
        default=True,
        description="Kill a process victim together with its descendants in the same process "
        "group (by cgroup.kill when its leaf cgroup holds just that family); false kills the "
        "chosen process alone.",
    )
    sigterm_first: bool = Field(
        default=False, description="Send SIGTERM and wait grace_ms before SIGKILL."
    )
    grace_ms: float = Field(default=3000, ge=0, le=600_000)
    confirm_timeout_ms: float = Field(
        default=10_000, gt=0, description="How long to wait for the victim's exit."
    )
    reaper_timeout_ms: float = Field(
        default=10_000,
        gt=0,
        description="A kill job the reaper thread has not finished by then means the thread "
        "is stuck or dead: it is replaced and the kill retried on the new thread.",
    )
    boost_on_esrch: bool = Field(
        default=True,
        description="When mrelease loses the race (ESRCH), renice the victim to -20 and take it "
        "out of SCHED_IDLE so it frees its memory sooner.",
    )


class ReaperSettings(_Model):
    cpus: tuple[int, ...] = Field(
        default=(), description="CPUs the reaper thread is pinned to; empty means all allowed."
    )
    nice: int | None = Field(default=None, ge=-20, le=19)
    queue_size: int = Field(default=32, ge=1, le=4096)
    mrelease_retries: int = Field(default=3, ge=0, le=100)

    @field_validator("cpus")
    @classmethod
    def _cpus_exist(cls, cpus: tuple[int, ...]) -> tuple[int, ...]:
        allowed = os.sched_getaffinity(0)
        missing = sorted(set(cpus) - allowed)
        if missing:
            raise ValueError(
                f"CPU(s) {missing} are not available to this process (allowed: {sorted(allowed)})"
            )
        return cpus


class DaemonSettings(_Model):
    loop: LoopName = "uvloop"
    dry_run: bool = False
    log_format: LogFormat = "auto"
    log_level: LogLevel = "info"
    mlockall: bool = True
    oom_score_adj: int | None = Field(default=-1000, ge=-1000, le=1000)
    proc_root: str = "/proc"
    io_threads: int = Field(default=2, ge=1, le=16)
    shutdown_timeout_ms: float = Field(default=5000, gt=0)


class MetricsSettings(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    pressure_cache_s: float = Field(
        default=10.0,
        ge=10.0,
        description="Reads of pressure files for gauges are cached at least this long; frequent "
        "reads starve unprivileged triggers.",
    )


class JournalSettings(_Model):
    path: str | None = Field(default=None, description="Append each kill record as a JSON line.")


class HookSettings(_Model):
    command: tuple[str, ...] = Field(default=(), description="Program and arguments; no shell.")
    url: str | None = Field(default=None, description="HTTP URL to POST the kill record to.")
    timeout_ms: float = Field(default=2000, gt=0, le=60_000)

    @model_validator(mode="after")
    def _one_target(self) -> HookSettings:
        if self.command and self.url:
            raise ValueError("a hook is either a command or a url, not both")
        return self


class HooksSettings(_Model):
    pre_kill: tuple[HookSettings, ...] = ()
    post_kill: tuple[HookSettings, ...] = ()


class WatchdogSettings(_Model):
    enabled: bool = True
    stall_limit_ms: float = Field(default=2000, ge=100)


class Settings(_Model):
    """The whole configuration. ``Settings()`` is a working default: watch the system."""

    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    scopes: tuple[ScopeSettings, ...] = Field(default_factory=lambda: (ScopeSettings(),))
    guard: GuardSettings = Field(default_factory=GuardSettings)
    kill: KillSettings = Field(default_factory=KillSettings)
    reaper: ReaperSettings = Field(default_factory=ReaperSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    hooks: HooksSettings = Field(default_factory=HooksSettings)
    watchdog: WatchdogSettings = Field(default_factory=WatchdogSettings)

    @model_validator(mode="after")
    def _scopes_unique(self) -> Settings:
        names = [scope.name for scope in self.scopes]
        if len(set(names)) != len(names):
            raise ValueError(f"scopes must differ, got {names}")
        if not self.scopes:
            raise ValueError("at least one scope is needed")
        return self


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "<root>"


def validate_settings(data: Mapping[str, Any], source: str | None = None) -> Settings:
    """Build :class:`Settings` from plain data; raise ConfigError naming the first bad field."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        extra = len(exc.errors()) - 1
        if extra:
            message += f" (and {extra} more problem{'s' if extra > 1 else ''})"
        raise ConfigError(_field_path(tuple(first["loc"])), message, source) from None


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    source = str(path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("<file>", "no such file", source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("<file>", f"not valid TOML: {exc}", source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError("<file>", f"not UTF-8 text (byte {exc.start})", source) from None
    except OSError as exc:
        raise ConfigError("<file>", f"cannot read: {exc.strerror}", source) from None


ENV_PREFIX = "PRESSURED_"


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``PRESSURED_DAEMON__DRY_RUN=1`` -> ``{"daemon": {"dry_run": "1"}}`` (pydantic coerces)."""
    overrides: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return overrides


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cgroup: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults < file < environment < command line (``cgroup`` and ``overrides``)."""
    data: dict[str, Any] = read_toml(path) if path is not None else {}
    data = deep_merge(data, env_overrides(os.environ if environ is None else environ))
    if cgroup is not None:
        data = with_cgroup_scope(data, cgroup)
    if overrides:
        data = deep_merge(data, overrides)
    return validate_settings(data, str(path) if path is not None else None)


def with_cgroup_scope(data: Mapping[str, Any], cgroup: str) -> dict[str, Any]:
    """``--cgroup PATH``: watch just that group. The first configured scope's levels and
    policies are kept (only its path changes); other scopes are dropped."""
    scopes = data.get("scopes") or [{}]
    first = dict(scopes[0]) if isinstance(scopes[0], Mapping) else {}
    first["cgroup"] = cgroup
    first.pop("memcg_v1", None)
    return {**data, "scopes": [first]}


def dump_settings(settings: Settings) -> dict[str, Any]:
    return settings.model_dump(mode="json")
