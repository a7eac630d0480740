"""Victim-selection policies: the contract (:mod:`.base`), the built-ins (one module each),
the resolver for plugins (:mod:`.registry`) and the chain that runs them (:mod:`.chain`).

Writing your own policy: subclass :class:`BasePolicy`, give it a ``name`` and an ``Options``
model (a :class:`PolicyOptions` subclass), implement ``async def __call__(self, snapshot)``
returning a :class:`Decision`. See ``docs/policies.md``.
"""

from __future__ import annotations

from pressured.policies.base import (
    BasePolicy,
    Decision,
    NoOptions,
    Policy,
    PolicyOptions,
    Victim,
)
from pressured.policies.patterns import ProcessPattern

__all__ = [
    "BasePolicy",
    "Decision",
    "NoOptions",
    "Policy",
    "PolicyOptions",
    "ProcessPattern",
    "Victim",
]
