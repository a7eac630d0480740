"""One resolver for every way a policy is named: a built-in name, an entry point in the
``pressured.policies`` group, or a ``package.module:Class`` import string.

Policies are validated when loaded (contract and options), not when first called, and every
error names the policy, where it came from, and the problem.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from pressured.errors import ConfigError, PolicyError
from pressured.policies.base import Policy

ENTRY_POINT_GROUP = "pressured.policies"


def builtin_policies() -> dict[str, type[Any]]:
    from pressured.policies.oom_score import OomScorePolicy

    return {OomScorePolicy.name: OomScorePolicy}


@dataclass(frozen=True, slots=True)
class PolicySource:
    name: str
    policy_class: type[Any]
    origin: str
    """``builtin``, ``entry point <dist> <version>`` or ``import string``."""


def _check_contract(cls: Any, label: str) -> type[Any]:
    if not inspect.isclass(cls):
        raise PolicyError(f"{label}: is {type(cls).__name__}, not a class")
    options = getattr(cls, "Options", None)
    if not (inspect.isclass(options) and issubclass(options, BaseModel)):
        raise PolicyError(f"{label}: has no 'Options' pydantic model class attribute")
    call = inspect.getattr_static(cls, "__call__", None)
    if call is None or not inspect.iscoroutinefunction(call):
        raise PolicyError(f"{label}: '__call__' must be 'async def __call__(self, snapshot)'")
    try:
        params = list(inspect.signature(call).parameters)
    except (TypeError, ValueError):
        params = []
    if len(params) != 2:
        raise PolicyError(
            f"{label}: '__call__' must take exactly (self, snapshot), takes {tuple(params)}"
        )
    return cls


def _import_string(spec: str) -> type[Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise PolicyError(f"{spec!r}: an import string looks like 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PolicyError(f"{spec!r}: importing {module_name} failed: {exc!r}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PolicyError(f"{spec!r}: module {module_name} has no {attr!r}") from None
    return _check_contract(obj, spec)


def discover() -> list[PolicySource]:
    """Every policy available by name: built-ins, then installed entry points."""
    sources = [PolicySource(name, cls, "builtin") for name, cls in builtin_policies().items()]
    for point in entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{point.dist.name} {point.dist.version}" if point.dist else "unknown distribution"
        label = f"entry point {point.name!r} ({dist})"
        try:
            cls = _check_contract(point.load(), label)
        except PolicyError:
            raise
        except Exception as exc:
            raise PolicyError(f"{label}: loading {point.value} failed: {exc!r}") from exc
        sources.append(PolicySource(point.name, cls, f"entry point {dist}"))
    return sources


def resolve(name: str) -> PolicySource:
    """Find the policy class for ``name``; raise PolicyError saying what was tried."""
    if ":" in name:
        return PolicySource(name, _import_string(name), "import string")
    builtins = builtin_policies()
    if name in builtins:
        return PolicySource(name, builtins[name], "builtin")
    for point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        dist = f"{point.dist.name} {point.dist.version}" if point.dist else "unknown distribution"
        label = f"entry point {name!r} ({dist})"
        try:
            loaded = point.load()
        except Exception as exc:
            raise PolicyError(f"{label}: loading {point.value} failed: {exc!r}") from exc
        return PolicySource(name, _check_contract(loaded, label), f"entry point {dist}")
    known = ", ".join(sorted(builtins))
    raise PolicyError(
        f"unknown policy {name!r}: not a built-in ({known}), not an installed "
        f"'{ENTRY_POINT_GROUP}' entry point, and not a 'module:Class' string"
    )


def instantiate(name: str, options: dict[str, Any], field: str) -> tuple[Policy, PolicySource]:
    """Resolve, validate options and construct. ``field`` is the config path for errors,
    e.g. ``scopes.0.policies.1``."""
    try:
        source = resolve(name)
    except PolicyError as exc:
        raise ConfigError(f"{field}.name", str(exc)) from None
    try:
        parsed = source.policy_class.Options.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        path = f"{field}.options" + (f".{loc}" if loc else "")
        raise ConfigError(path, f"{first['msg']} (policy {name!r}, {source.origin})") from None
    try:
        policy = source.policy_class(parsed)
    except Exception as exc:
        raise ConfigError(
            field, f"policy {name!r} ({source.origin}) failed to start: {exc!r}"
        ) from exc
    return policy, source
