"""Helpers for testing pressured policies without root or real memory pressure.

Build snapshots by hand (:func:`make_process`, :func:`make_cgroup`, :func:`make_snapshot`),
run a policy on them (:func:`run_policy`, or :func:`run_chain` behind the real guard) and
assert on the decision (:func:`assert_kills`, :func:`assert_no_action`). Importing this
package needs no privileges; the real-cgroup helpers live in :mod:`pressured.testing.scratch`
and are not imported from here.

The names are loaded lazily from :mod:`pressured.testing.policykit` on first use: the test
workloads (``python -m pressured.testing.workloads``) live in this package too, and must stay
small processes, so importing the package itself must not pull in pydantic and friends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pressured.testing.policykit import (
        SELF_PID,
        assert_kills,
        assert_no_action,
        kernel_oom_score,
        make_cgroup,
        make_policy,
        make_pressure,
        make_process,
        make_snapshot,
        run_chain,
        run_policy,
        run_policy_async,
    )

__all__ = [
    "SELF_PID",
    "assert_kills",
    "assert_no_action",
    "kernel_oom_score",
    "make_cgroup",
    "make_policy",
    "make_pressure",
    "make_process",
    "make_snapshot",
    "run_chain",
    "run_policy",
    "run_policy_async",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module("pressured.testing.policykit"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pressured.testing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
