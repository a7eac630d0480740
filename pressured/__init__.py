"""pressured: an event-driven memory-pressure controller for Linux.

The public API is the names in ``__all__``; everything else lives in modules named after
their job. Names load lazily, so ``import pressured`` stays cheap for tools and workloads
that only need a submodule.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "Controller": "pressured.controller",
    "run": "pressured.daemon",
    "Settings": "pressured.config",
    "load_settings": "pressured.config",
    "Policy": "pressured.policies.base",
    "BasePolicy": "pressured.policies.base",
    "PolicyOptions": "pressured.policies.base",
    "Decision": "pressured.policies.base",
    "Victim": "pressured.policies.base",
    "Snapshot": "pressured.snapshot",
    "PressureEvent": "pressured.events",
    "KillRecord": "pressured.events",
    "watch": "pressured.watch",
    "kill_and_reap": "pressured.reap",
    "kill_and_reap_cgroup": "pressured.reap",
    "Reaper": "pressured.reaper",
    "PressuredError": "pressured.errors",
    "ConfigError": "pressured.errors",
    "PolicyError": "pressured.errors",
}

__all__ = [
    "BasePolicy",
    "ConfigError",
    "Controller",
    "Decision",
    "KillRecord",
    "Policy",
    "PolicyError",
    "PolicyOptions",
    "PressureEvent",
    "PressuredError",
    "Reaper",
    "Settings",
    "Snapshot",
    "Victim",
    "__version__",
    "kill_and_reap",
    "kill_and_reap_cgroup",
    "load_settings",
    "run",
    "watch",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pressured' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from pressured.config import Settings, load_settings
    from pressured.controller import Controller
    from pressured.daemon import run
    from pressured.errors import ConfigError, PolicyError, PressuredError
    from pressured.events import KillRecord, PressureEvent
    from pressured.policies.base import BasePolicy, Decision, Policy, PolicyOptions, Victim
    from pressured.reap import kill_and_reap, kill_and_reap_cgroup
    from pressured.reaper import Reaper
    from pressured.snapshot import Snapshot
    from pressured.watch import watch
