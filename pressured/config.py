"""pressured's configuration: one frozen pydantic tree, unknown keys are errors.

Precedence, lowest first: built-in defaults < TOML file < ``PRESSURED_*`` environment <
command line. ``load_settings`` is the one entry point; an invalid configuration raises
:class:`ConfigErrors` (a :class:`~pressured.errors.ConfigError`) listing every problem, each
with its dotted path (``scopes.0.levels.1``) and the variable or flag that set it.

Every field has a description: ``python -m pressured.cli.reference`` turns them into
docs/configuration.md and examples/pressured.full.toml (tests fail when those drift).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pressured.cgroup_paths import (
    CgroupMounts,
    Hierarchy,
    host_cgroup_mounts,
    normalize_cgroup_path,
)
from pressured.errors import ConfigError
from pressured.kernel.psi import Resource, TriggerSpec

LoopName = Literal["uvloop", "asyncio"]
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- validation rules shared by several sections ------------------------------------------------

COMM_LENGTH = 15
"""The kernel keeps the first 15 bytes of a process name (TASK_COMM_LEN 16 with the NUL)."""

SCOPE_KEYWORDS = ("system", "pod")
"""Words a scope's ``cgroup`` may be instead of a path: ``system`` (the whole host, node
pressure) and ``pod`` (the cgroup holding this container's own cgroup, found at start-up)."""


def _mounts(info: ValidationInfo) -> CgroupMounts:
    """The cgroup mounts a path is read against: given by ``validate_settings`` (from the
    configured proc_root), else this host's."""
    context = info.context if isinstance(info.context, Mapping) else {}
    mounts = context.get("cgroup_mounts")
    return mounts if isinstance(mounts, CgroupMounts) else host_cgroup_mounts()


def cgroup_path_rule(value: str, info: ValidationInfo, hierarchy: Hierarchy = "v2") -> str:
    """Every cgroup named in the configuration goes through the one normalising function."""
    return normalize_cgroup_path(value, hierarchy=hierarchy, mounts=_mounts(info))


def comm_names_rule(names: tuple[str, ...]) -> tuple[str, ...]:
    """A process name longer than comm can hold never matches: refuse it, say what would."""
    for index, name in enumerate(names):
        if not name:
            raise ValueError(f"name {index} is empty")
        if len(name.encode()) > COMM_LENGTH:
            raise ValueError(
                f"name {index} ({name!r}) is {len(name.encode())} bytes, but the kernel keeps "
                f"only the first {COMM_LENGTH} of a process name (comm), so it can never match; "
                f"write {name.encode()[:COMM_LENGTH].decode(errors='ignore')!r}, or match the "
                "command line with protect_cmdline"
            )
    return names


class LevelSettings(_Model):
    """One PSI trigger level: fire when tasks stalled ``threshold_ms`` within ``window_ms``."""

    name: str = Field(min_length=1, description="Name policies see in the event (e.g. 'some').")
    kind: Literal["some", "full"] = Field(
        default="some",
        description="'some': at least one task stalled on memory; 'full': all non-idle tasks "
        "stalled at once (the worse sign).",
    )
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

    enabled: bool = Field(
        default=False,
        description="Poll memory availability as well as PSI (earlyoom's way; PSI alone needs "
        "no polling).",
    )
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
    min_interval_ms: float = Field(
        default=100, ge=10, description="Shortest polling interval, used when memory is short."
    )
    max_interval_ms: float = Field(
        default=1000,
        ge=10,
        description="Longest polling interval, used when memory is plentiful (the interval "
        "shrinks as memory runs out).",
    )
    level: str = Field(
        default="memory", description="Level name this monitor's events carry to the policies."
    )

    @model_validator(mode="after")
    def _interval_order(self) -> AvailabilitySettings:
        if self.min_interval_ms > self.max_interval_ms:
            raise ValueError("min_interval_ms must not exceed max_interval_ms")
        return self


class PolicySettings(_Model):
    """One link of a policy chain: a built-in name, an entry point or ``module:Class``."""

    name: str = Field(
        min_length=1,
        description="A built-in policy ('oom_score', 'largest', ...; see `pressured policies`), "
        "an installed plugin's entry point name, or 'package.module:Class'.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="The policy's own options, checked against its options model "
        "(`pressured policies NAME` lists them).",
    )
    timeout_ms: float = Field(
        default=500,
        gt=0,
        le=60_000,
        description="A decision slower than this is abandoned and the next policy asked.",
    )


def _default_policies() -> tuple[PolicySettings, ...]:
    # The culprit first (what is taking memory now, by family), then the kernel's badness as
    # the safety net should the first fail or time out (docs/policies.md states the rule).
    return (PolicySettings(name="culprit"), PolicySettings(name="oom_score"))


class ScopeSettings(_Model):
    """What to watch and whom to kill: the whole system or one cgroup v2 path."""

    cgroup: str | None = Field(
        default=None,
        description="The cgroup v2 group to watch and kill in: '/jobs', 'jobs', "
        "'/sys/fs/cgroup/jobs' (a path under the mount) or '0::/jobs' (a /proc/PID/cgroup "
        "line). 'system' (or leaving it out) watches node pressure and every visible process; "
        "'pod' is the cgroup holding this container's own cgroup (a Kubernetes pod), found at "
        "start-up. With daemon.mode = 'sidecar' a scope without 'cgroup' means 'pod'.",
    )
    memcg_v1: str | None = Field(
        default=None,
        description="Hybrid hosts (memory controller on cgroup v1): the v1 memory cgroup "
        "holding this scope's accounting, as '/jobs', '/sys/fs/cgroup/memory/jobs' or "
        "'4:memory:/jobs'. Left out: the v1 group at the same path as 'cgroup' when it exists, "
        "else the deepest v1 group holding all the scope's processes (from /proc/PID/cgroup).",
    )
    levels: tuple[LevelSettings, ...] = Field(
        default_factory=_default_levels,
        description="PSI trigger levels armed on the scope's pressure file (default: some "
        "70 ms / full 700 ms per 1 s, lmkd's).",
    )
    availability: AvailabilitySettings = Field(
        default_factory=AvailabilitySettings,
        description="The polling availability monitor (off by default).",
    )
    policies: tuple[PolicySettings, ...] = Field(
        default_factory=_default_policies,
        description="The policy chain, asked in order until one names a victim.",
    )
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
        "pressure file is starving unprivileged triggers. Fast refaults (10x "
        "recheck_refaults_per_s) with next to no stall growth mean a faster reader froze the "
        "stall total itself; both are acted on. 0 turns the check off; shorter than "
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

    @field_validator("cgroup")
    @classmethod
    def _cgroup_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "system":
            return None
        if value in SCOPE_KEYWORDS:
            return value
        return cgroup_path_rule(value, info)

    @field_validator("memcg_v1")
    @classmethod
    def _memcg_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else cgroup_path_rule(value, info, "memory")

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
    protect_uids: tuple[int, ...] = Field(
        default=(), description="User IDs whose processes are never chosen."
    )
    protect: tuple[ProtectRule, ...] = Field(
        default=(),
        description="Rules combining a name or cmdline with exe, uid or cgroup.",
    )
    protect_names: tuple[str, ...] = Field(
        default=(),
        description="Exact process names (comm, at most 15 characters: the kernel keeps no "
        "more) protected when the process is root-owned (uid 0): a name alone is "
        "forgeable. Prefer 'protect_executables' or 'protect' rules.",
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
    max_kills_per_minute: int = Field(
        default=10, ge=1, description="At most this many kills in any 60 s; more are refused."
    )

    # Validation rules owned by the configuration (see "validation rules" above).
    @field_validator("protect_names")
    @classmethod
    def _names_fit_comm(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return comm_names_rule(names)

    @field_validator("protect_cgroups")
    @classmethod
    def _cgroup_paths(cls, paths: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return tuple(cgroup_path_rule(path, info) for path in paths)

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
    """How a victim is killed."""

    family: bool = Field(
        default=True,
        description="Kill a process victim together with its descendants in the same process "
        "group (by cgroup.kill when its leaf cgroup holds just that family); false kills the "
        "chosen process alone.",
    )
    sigterm_first: bool = Field(
        default=False, description="Send SIGTERM and wait grace_ms before SIGKILL."
    )
    grace_ms: float = Field(
        default=3000,
        ge=0,
        le=600_000,
        description="With sigterm_first: how long a victim may take to exit after SIGTERM.",
    )
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
    """The reaper thread that sends SIGKILL and calls process_mrelease."""

    cpus: tuple[int, ...] = Field(
        default=(), description="CPUs the reaper thread is pinned to; empty means all allowed."
    )
    nice: int | None = Field(
        default=None,
        ge=-20,
        le=19,
        description="Nice value of the reaper thread; unset keeps the daemon's.",
    )
    queue_size: int = Field(
        default=32, ge=1, le=4096, description="Kill jobs that may wait for the reaper thread."
    )
    mrelease_retries: int = Field(
        default=3,
        ge=0,
        le=100,
        description="process_mrelease retries when part of the memory could not be released "
        "yet (EAGAIN).",
    )

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


DaemonMode = Literal["host", "sidecar"]


class DaemonSettings(_Model):
    """How the daemon runs."""

    mode: DaemonMode = Field(
        default="host",
        description="'sidecar' (a container beside the application in its pod): a scope "
        "without 'cgroup' watches the pod's own cgroup instead of node pressure. Kubernetes "
        "manifests set PRESSURED_DAEMON__MODE=sidecar.",
    )
    loop: LoopName = Field(
        default="uvloop", description="Event loop: uvloop, or the standard library's asyncio."
    )
    dry_run: bool = Field(
        default=False,
        description="Decide, log and journal every kill, but send no signal.",
    )
    log_format: LogFormat = Field(
        default="auto",
        description="'json' (one object per line), 'console' (readable), or 'auto': console "
        "on a terminal, JSON otherwise.",
    )
    log_level: LogLevel = Field(default="info", description="Least severe level logged.")
    mlockall: bool = Field(
        default=True,
        description="Lock the daemon's memory (mlockall) so it never stalls in reclaim itself "
        "(needs CAP_IPC_LOCK).",
    )
    oom_score_adj: int | None = Field(
        default=-1000,
        ge=-1000,
        le=1000,
        description="The daemon's own oom_score_adj (-1000: the kernel never kills it); unset "
        "leaves it alone.",
    )
    proc_root: str = Field(
        default="/proc", description="Where procfs is mounted (tests point it elsewhere)."
    )
    io_threads: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Worker threads for /proc scans and file I/O, all created at start-up.",
    )
    shutdown_timeout_ms: float = Field(
        default=5000,
        gt=0,
        description="How long a graceful stop may take before the rest is abandoned.",
    )


DEFAULT_METRICS_PORT = 19464
"""Outside Prometheus' exporter range (9100-9999, every port of it allocated, 9464 to the
OpenTelemetry exporter) and below Linux's ephemeral ports (32768+)."""


class MetricsSettings(_Model):
    """The HTTP endpoint: /metrics, /healthz and /status."""

    enabled: bool = Field(default=True, description="Serve the HTTP endpoint.")
    host: str = Field(
        default="127.0.0.1",
        description="Address to bind; '0.0.0.0' in a pod, so probes reach the pod IP.",
    )
    port: int = Field(
        default=DEFAULT_METRICS_PORT, ge=0, le=65535, description="TCP port; 0 picks a free one."
    )
    pressure_cache_s: float = Field(
        default=10.0,
        ge=10.0,
        description="Reads of pressure files for gauges are cached at least this long; frequent "
        "reads starve unprivileged triggers.",
    )


class JournalSettings(_Model):
    """The kill journal `pressured log` reads."""

    path: str | None = Field(default=None, description="Append each kill record as a JSON line.")


class HookSettings(_Model):
    command: tuple[str, ...] = Field(default=(), description="Program and arguments; no shell.")
    url: str | None = Field(default=None, description="HTTP URL to POST the kill record to.")
    timeout_ms: float = Field(
        default=2000,
        gt=0,
        le=60_000,
        description="The hook is cut off after this long; a kill never waits longer for it.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> HookSettings:
        if self.command and self.url:
            raise ValueError("a hook is either a command or a url, not both")
        return self


class HooksSettings(_Model):
    """Programs or URLs told about kills."""

    pre_kill: tuple[HookSettings, ...] = Field(
        default=(), description="Run after a victim is chosen, before the signal."
    )
    post_kill: tuple[HookSettings, ...] = Field(
        default=(), description="Run once the victim is dead (or the kill failed)."
    )


class WatchdogSettings(_Model):
    """A thread that notices a stuck event loop and acts without it."""

    enabled: bool = Field(default=True, description="Run the watchdog thread.")
    stall_limit_ms: float = Field(
        default=2000,
        ge=100,
        description="The event loop is declared stuck after this long without a sign of life.",
    )


class Settings(_Model):
    """The whole configuration. ``Settings()`` is a working default: watch the system."""

    daemon: DaemonSettings = Field(default_factory=DaemonSettings, description="The daemon.")
    scopes: tuple[ScopeSettings, ...] = Field(
        default_factory=lambda: (ScopeSettings(),),
        description="What to watch and where to kill; one entry per scope ([[scopes]]).",
    )
    guard: GuardSettings = Field(
        default_factory=GuardSettings, description="What is never killed, and how often."
    )
    kill: KillSettings = Field(default_factory=KillSettings, description="How to kill.")
    reaper: ReaperSettings = Field(default_factory=ReaperSettings, description="The reaper thread.")
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings, description="The HTTP endpoint."
    )
    journal: JournalSettings = Field(
        default_factory=JournalSettings, description="The kill journal."
    )
    hooks: HooksSettings = Field(default_factory=HooksSettings, description="Kill hooks.")
    watchdog: WatchdogSettings = Field(
        default_factory=WatchdogSettings, description="The event-loop watchdog."
    )

    @model_validator(mode="before")
    @classmethod
    def _sidecar_scopes_default_to_pod(cls, data: Any) -> Any:
        """In a sidecar, a scope that names no cgroup means the pod's own cgroup."""
        if not isinstance(data, Mapping):
            return data
        daemon = data.get("daemon")
        mode = daemon.get("mode") if isinstance(daemon, Mapping) else getattr(daemon, "mode", None)
        if mode != "sidecar":
            return data
        scopes = data.get("scopes", [{}])
        if not isinstance(scopes, list | tuple):
            return data
        adjusted = [
            {**scope, "cgroup": "pod"}
            if isinstance(scope, Mapping) and scope.get("cgroup") is None
            else scope
            for scope in scopes
        ]
        return {**data, "scopes": adjusted}

    @model_validator(mode="after")
    def _scopes_unique(self) -> Settings:
        names = [scope.name for scope in self.scopes]
        if len(set(names)) != len(names):
            raise ValueError(f"scopes must differ, got {names}")
        if not self.scopes:
            raise ValueError("at least one scope is needed")
        return self


# -- loading ------------------------------------------------------------------------------------


class ConfigErrors(ConfigError):
    """Every problem of one configuration at once. ``field``/``reason`` are the first problem's
    (so code that reads one still works); ``problems`` holds all of them, in order."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        field, reason = problems[0]
        if len(problems) > 1:
            more = len(problems) - 1
            reason += f" (and {more} more problem{'s' if more > 1 else ''})"
        super().__init__(field, reason, source)
        self.problems = tuple(problems)

    def lines(self) -> list[str]:
        return [f"{field}: {reason}" for field, reason in self.problems]


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "<root>"


def _origin_of(location: tuple[int | str, ...], origins: Mapping[tuple[str, ...], str]) -> str:
    """Which environment variable or flag set the value at ``location`` ('' for the file)."""
    parts = tuple(str(part) for part in location)
    for path, origin in origins.items():
        if parts[: len(path)] == path:
            return origin
    return ""


def _validation_mounts(data: Mapping[str, Any]) -> CgroupMounts:
    daemon = data.get("daemon")
    proc_root = daemon.get("proc_root") if isinstance(daemon, Mapping) else None
    return host_cgroup_mounts(proc_root if isinstance(proc_root, str) else "/proc")


def validate_settings(
    data: Mapping[str, Any],
    source: str | None = None,
    *,
    origins: Mapping[tuple[str, ...], str] | None = None,
) -> Settings:
    """Build :class:`Settings` from plain data; raise :class:`ConfigErrors` naming every bad
    field (and the environment variable or flag that set it, when one did)."""
    try:
        return Settings.model_validate(data, context={"cgroup_mounts": _validation_mounts(data)})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            location = tuple(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            origin = _origin_of(location, origins or {})
            if origin:
                message += f" (set by {origin})"
            problems.append((_field_path(location), message))
        raise ConfigErrors(problems, source) from None


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


def _env_value(name: str, value: str) -> Any:
    """A list or table may be given as JSON (``PRESSURED_GUARD__PROTECT_UIDS='[0, 33]'``);
    anything else stays text for pydantic to coerce."""
    if not value.lstrip().startswith(("[", "{")):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ConfigError(
            _env_field(name), f"looks like JSON but does not parse: {exc}", f"environment {name}"
        ) from None


def _env_path(name: str) -> list[str]:
    return name[len(ENV_PREFIX) :].lower().split("__")


def _env_field(name: str) -> str:
    return ".".join(_env_path(name))


def env_overrides_with_origins(
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """``PRESSURED_DAEMON__DRY_RUN=1`` -> ``{"daemon": {"dry_run": "1"}}``, and which variable
    set each path. A number picks a list entry: ``PRESSURED_SCOPES__0__CGROUP=/jobs``."""
    overrides: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        path = _env_path(key)
        if any(not part for part in path):
            raise ConfigError(_env_field(key), "empty section name", f"environment {key}")
        node = overrides
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    _env_field(key), "another variable sets this section", f"environment {key}"
                )
            node = child
        node[path[-1]] = _env_value(key, environ[key])
        origins[tuple(path)] = f"environment variable {key}"
    return overrides, origins


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``PRESSURED_DAEMON__DRY_RUN=1`` -> ``{"daemon": {"dry_run": "1"}}`` (pydantic coerces)."""
    return env_overrides_with_origins(environ)[0]


def _merge_indexed(base: list[Any], override: Mapping[str, Any]) -> list[Any]:
    """Entries of a list overridden by index (``{"0": {...}}``), as environment names say."""
    merged = list(base)
    for index_text, value in override.items():
        index = int(index_text)
        while len(merged) <= index:
            merged.append({})
        if isinstance(value, Mapping) and isinstance(merged[index], Mapping):
            merged[index] = deep_merge(merged[index], value)
        else:
            merged[index] = value
    return merged


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        indexed = isinstance(value, Mapping) and value and all(str(k).isdigit() for k in value)
        if indexed and isinstance(current, list | tuple | type(None)):
            merged[key] = _merge_indexed(list(current or [{}]), value)
        elif isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cgroup: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    contents: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults < file < environment < command line (``cgroup`` and ``overrides``).

    ``contents``: the file's document, already read (a reload reads it off the loop with
    :func:`pressured.ops.configfile.read_config_file`); ``path`` then only names it."""
    source = str(path) if path is not None else None
    data: dict[str, Any] = {}
    if contents is not None:
        data = dict(contents)
    elif path is not None:
        data = read_toml(path)
    env_data, origins = env_overrides_with_origins(os.environ if environ is None else environ)
    data = deep_merge(data, env_data)
    if cgroup is not None:
        data = with_cgroup_scope(data, cgroup)
        origins = {("scopes", "0", "cgroup"): "--cgroup", **origins}
    if overrides:
        data = deep_merge(data, overrides)
    return validate_settings(data, source, origins=origins)


def with_cgroup_scope(data: Mapping[str, Any], cgroup: str) -> dict[str, Any]:
    """``--cgroup PATH``: watch just that group. The first configured scope's levels, policies
    and memcg_v1 are kept (only its path changes); other scopes are dropped."""
    scopes = data.get("scopes") or [{}]
    first = dict(scopes[0]) if isinstance(scopes[0], Mapping) else {}
    first["cgroup"] = cgroup
    return {**data, "scopes": [first]}


def dump_settings(settings: Settings) -> dict[str, Any]:
    return settings.model_dump(mode="json")
