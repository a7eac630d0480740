"""``pressured.watch``: pressure events from real PSI triggers, as an async iterator.

::

    async with pressured.watch() as events:          # the caller's own cgroup
        async for event in events:
            shed_load(event.level)

Works in any running asyncio loop (stdlib or uvloop). Leaving the block, breaking out of the
loop or cancelling the task closes every fd it opened. Under systemd (``MemoryPressureWatch=``)
the trigger the service manager hands over through ``$MEMORY_PRESSURE_WATCH`` and
``$MEMORY_PRESSURE_WRITE`` is used when no target is given.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

import structlog

from pressured.cgroup_paths import CgroupPathError, host_cgroup_mounts, normalize_cgroup_path
from pressured.config import LevelSettings
from pressured.errors import ConfigError, KernelError
from pressured.events import SYSTEM_SCOPE, EventSource, PressureEvent
from pressured.kernel import cgroupfs, psi
from pressured.kernel.psi import Resource, TriggerSpec
from pressured.monitors.psi import ArmedTrigger, TriggerSet

log = structlog.get_logger("pressured.watch")

OWN_CGROUP = "own"
POD_KEYWORD = "pod"
QUEUE_SIZE = 64

DEFAULT_WATCH_LEVELS = (
    LevelSettings(name="some", kind="some", threshold_ms=100, window_ms=2000),
    LevelSettings(name="full", kind="full", threshold_ms=500, window_ms=2000),
)


def parse_trigger_text(text: str) -> TriggerSpec:
    """``"some 200000 2000000"`` (what systemd writes) as a memory TriggerSpec."""
    words = text.strip("\0 \n").split()
    if len(words) != 3 or words[0] not in ("some", "full"):
        raise ConfigError("MEMORY_PRESSURE_WRITE", f"not '<some|full> <us> <us>': {text!r}")
    try:
        threshold, window = int(words[1]), int(words[2])
    except ValueError:
        raise ConfigError("MEMORY_PRESSURE_WRITE", f"non-numeric: {text!r}") from None
    kind: Literal["some", "full"] = "some" if words[0] == "some" else "full"
    return TriggerSpec(Resource.MEMORY, kind, threshold, window)


def systemd_trigger(environ: Mapping[str, str]) -> tuple[str, TriggerSpec] | None:
    """The (path, spec) systemd asked this service to watch, or None when not set (or set to
    ``/dev/null``, systemd's way of saying 'do not watch')."""
    path = environ.get("MEMORY_PRESSURE_WATCH")
    if not path or path == "/dev/null":
        return None
    encoded = environ.get("MEMORY_PRESSURE_WRITE", "")
    try:
        text = (
            base64.b64decode(encoded, validate=True).decode("ascii")
            if encoded
            else "some 200000 2000000"
        )
    except (binascii.Error, UnicodeDecodeError):
        raise ConfigError("MEMORY_PRESSURE_WRITE", "not valid base64 of ASCII text") from None
    return path, parse_trigger_text(text)


def _normalized(requested: str, proc_root: str) -> str:
    """The caller's cgroup in any accepted form, as a path inside the hierarchy."""
    try:
        return normalize_cgroup_path(requested, mounts=host_cgroup_mounts(proc_root))
    except CgroupPathError as exc:
        raise ConfigError("cgroup", str(exc)) from None


def _pod_group(proc_root: str) -> str:
    """The group holding the caller's own group (a container's pod); see podscope."""
    from pressured.podscope import find_pod_group

    try:
        return find_pod_group(cgroupfs.discover_layout(proc_root), proc_root).path
    except (KernelError, OSError) as exc:
        raise ConfigError("cgroup", f"'{POD_KEYWORD}': {exc}") from None


class watch:  # reads as a function at the call site: `async with watch() as events:`
    """Arm PSI triggers on a cgroup (default: the caller's own) or the system.

    ``cgroup``: a v2 group in any form :mod:`pressured.cgroup_paths` accepts (``/jobs``,
    ``/sys/fs/cgroup/jobs``, ``0::/jobs``), ``"pod"`` (the group holding the caller's own,
    a container's pod), ``"system"`` for ``/proc/pressure/memory``, or
    :data:`OWN_CGROUP`. ``levels`` default to some 100 ms / full 500 ms per 2 s, which every
    kernel accepts without CAP_SYS_RESOURCE; windows the caller asks for are made legal the
    same way the daemon does it, and the change is logged (``trigger.adjusted``) and kept in
    :attr:`armed`.
    """

    def __init__(
        self,
        cgroup: str = OWN_CGROUP,
        *,
        levels: Sequence[LevelSettings] = DEFAULT_WATCH_LEVELS,
        proc_root: str = "/proc",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.requested = cgroup
        self.levels = tuple(levels)
        self.proc_root = proc_root
        self.environ = os.environ if environ is None else environ
        self.scope = SYSTEM_SCOPE
        self.armed: tuple[ArmedTrigger, ...] = ()
        self._triggers: TriggerSet | None = None
        self._queue: asyncio.Queue[PressureEvent] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = 0

    def _targets(self) -> list[tuple[str, str, TriggerSpec]]:
        """(level name, pressure file, spec) for every trigger to arm."""
        if self.requested == OWN_CGROUP:
            handed = systemd_trigger(self.environ)
            if handed is not None:
                path, spec = handed
                self.scope = str(Path(path).parent)
                return [(spec.kind, path, spec)]
            own = cgroupfs.own_cgroup("self", self.proc_root)
            cgroup = own if own not in (None, "/") else SYSTEM_SCOPE
        elif self.requested == SYSTEM_SCOPE:
            cgroup = SYSTEM_SCOPE
        elif self.requested == POD_KEYWORD:
            cgroup = _pod_group(self.proc_root)
        else:
            cgroup = _normalized(self.requested, self.proc_root)
        if cgroup == SYSTEM_SCOPE:
            path = str(psi.system_pressure_path(Resource.MEMORY, self.proc_root))
        else:
            layout = cgroupfs.discover_layout(self.proc_root)
            path = str(cgroupfs.Cgroup(layout, cgroup).pressure_path("memory"))
        self.scope = cgroup
        return [(level.name, path, level.trigger()) for level in self.levels]

    async def __aenter__(self) -> watch:
        loop = asyncio.get_running_loop()
        privileged = psi.may_use_fast_windows(self.proc_root)
        triggers = TriggerSet(loop, self._fired)
        try:
            for name, path, spec in self._targets():
                armed = triggers.arm(name, path, spec, privileged=privileged)
                if armed.adjustment is not None:
                    log.info(
                        "trigger.adjusted",
                        scope=self.scope,
                        level=name,
                        requested=str(armed.requested),
                        effective=str(armed.effective),
                        reason=armed.adjustment.reason,
                    )
        except BaseException:
            triggers.close()
            raise
        self._triggers = triggers
        self.armed = triggers.armed
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._triggers is not None:
            self._triggers.close()
            self._triggers = None

    def fds(self) -> list[int]:
        return self._triggers.fds() if self._triggers else []

    def _fired(self, armed: ArmedTrigger) -> None:
        event = PressureEvent(
            scope=self.scope, level=armed.level, source=EventSource.PSI, trigger=armed.effective
        )
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1  # the consumer is behind; the newest event adds nothing

    def __aiter__(self) -> watch:
        return self

    async def __anext__(self) -> PressureEvent:
        if self._triggers is None:
            # Used as a bare async iterator (no `async with`): arm on first use.
            await self.__aenter__()
        try:
            return await self._queue.get()
        except BaseException:
            self.close()
            raise
