"""One resolver for every way a policy is named:

* a **built-in** name (``oom_score``, ``largest`` ...: :func:`builtin_policies`);
* an **entry point** in the ``pressured.policies`` group, from an installed distribution;
* an **import string**: ``package.module:Class`` (found on ``sys.path``, e.g. through
  ``PYTHONPATH``), or ``/path/to/file.py:Class`` (a single file, loaded by path).

Policies are validated when loaded (class contract and options), not when first called, and
every error names the policy, where it came from (distribution and version, or file) and the
problem. Plugins run with root's rights, so a module file or folder that users other than root
(or us) can write is refused *before* any of its code runs (:func:`check_safe_path`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pressured.errors import ConfigError, PolicyError, UnsafeFileError
from pressured.policies.base import Policy
from pressured.safety import unsafe_reason

ENTRY_POINT_GROUP = "pressured.policies"

BUILTIN = "builtin"
ENTRY_POINT = "entry point"
IMPORT_STRING = "import string"


BUILTIN_CLASSES: dict[str, str] = {
    "culprit": "pressured.policies.culprit:CulpritPolicy",
    "oom_score": "pressured.policies.oom_score:OomScorePolicy",
    "largest": "pressured.policies.largest:LargestPolicy",
    "adj_tiers": "pressured.policies.adj_tiers:AdjTiersPolicy",
    "swap_usage": "pressured.policies.swap_usage:SwapUsagePolicy",
    "cgroup_size_growth": "pressured.policies.cgroup_size_growth:CgroupSizeGrowthPolicy",
    "cgroup_pressure": "pressured.policies.cgroup_pressure:CgroupPressurePolicy",
}
"""Where each built-in policy lives, so that resolving one name imports only its module: the
daemon imports, before arming, only the policies its configuration names."""


def builtin_policy(name: str) -> type[Any] | None:
    """The built-in policy class named ``name`` (importing only its module), or None."""
    target = BUILTIN_CLASSES.get(name)
    if target is None:
        return None
    module, _, attr = target.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), attr)
    return cls


def builtin_policies() -> dict[str, type[Any]]:
    """Every built-in policy class by its configuration name."""
    from pressured.policies.adj_tiers import AdjTiersPolicy
    from pressured.policies.cgroup_pressure import CgroupPressurePolicy
    from pressured.policies.cgroup_size_growth import CgroupSizeGrowthPolicy
    from pressured.policies.culprit import CulpritPolicy
    from pressured.policies.largest import LargestPolicy
    from pressured.policies.oom_score import OomScorePolicy
    from pressured.policies.swap_usage import SwapUsagePolicy

    classes: list[type[Any]] = [
        CulpritPolicy,
        OomScorePolicy,
        LargestPolicy,
        AdjTiersPolicy,
        SwapUsagePolicy,
        CgroupSizeGrowthPolicy,
        CgroupPressurePolicy,
    ]
    return {cls.name: cls for cls in classes}


@dataclass(frozen=True, slots=True)
class PolicySource:
    """A loaded policy class and where it came from."""

    name: str
    """The name the configuration used (built-in name, entry-point name or import string)."""
    policy_class: type[Any]
    origin: str
    """``builtin``, ``entry point <dist> <version>`` or ``import string``."""
    kind: str = BUILTIN
    """:data:`BUILTIN`, :data:`ENTRY_POINT` or :data:`IMPORT_STRING`."""
    distribution: str | None = None
    """``<name> <version>`` of the distribution that declared the entry point."""
    location: str | None = None
    """The file the class was defined in, where known."""


@dataclass(frozen=True, slots=True)
class PluginProblem:
    """An installed entry point that could not be loaded (listed by ``pressured policies``)."""

    name: str
    distribution: str
    problem: str


@dataclass(frozen=True, slots=True)
class Discovery:
    sources: tuple[PolicySource, ...]
    problems: tuple[PluginProblem, ...] = field(default=())


# -- safety --------------------------------------------------------------------------------------


def check_safe_path(path: str | os.PathLike[str]) -> None:
    """Refuse a file that a user other than root (or us) could change, through itself or any
    folder above it (the rule of :mod:`pressured.safety`, shared with configuration files)."""
    reason = unsafe_reason(path)
    if reason is not None:
        raise UnsafeFileError(f"{reason}; code that runs as root must not be changeable by others")


def _check_module_safe(module_name: str) -> str | None:
    """Check the top-level package of ``module_name`` before importing it; return its file.

    Finding the spec of a top-level name runs none of its code, so this happens first.
    """
    top = module_name.split(".", 1)[0]
    if top in sys.modules:
        return getattr(sys.modules[top], "__file__", None)
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None  # the import below raises ModuleNotFoundError with the usual message
    if spec.origin and spec.has_location:
        check_safe_path(spec.origin)
        if spec.submodule_search_locations:
            check_safe_path(Path(spec.origin).parent)
    return spec.origin


# -- contract ------------------------------------------------------------------------------------


def _binds(function: Callable[..., Any], *args: object) -> bool:
    try:
        inspect.signature(function).bind(*args)
    except TypeError:
        return False
    except ValueError:
        return True  # no signature to inspect (C code): give it the benefit of the doubt
    return True


def check_contract(cls: Any, label: str) -> type[Any]:
    """Check the :class:`~pressured.policies.base.Policy` contract now, not at the first call."""
    if not inspect.isclass(cls):
        raise PolicyError(f"{label}: is {type(cls).__name__}, not a class")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{label}: needs a class attribute 'name' (a non-empty string)")
    options = getattr(cls, "Options", None)
    if not (inspect.isclass(options) and issubclass(options, BaseModel)):
        raise PolicyError(f"{label}: has no 'Options' pydantic model class attribute")
    call = inspect.getattr_static(cls, "__call__", None)
    if call is None or not inspect.iscoroutinefunction(call):
        raise PolicyError(f"{label}: '__call__' must be 'async def __call__(self, snapshot)'")
    if not _binds(call, object(), object()):
        params = tuple(inspect.signature(call).parameters)
        raise PolicyError(f"{label}: '__call__' must take (self, snapshot), takes {params}")
    if not _binds(cls, object()):
        params = tuple(inspect.signature(cls).parameters)
        raise PolicyError(f"{label}: '__init__' must take the parsed options, takes {params}")
    return cls


def _location(cls: type[Any]) -> str | None:
    try:
        return inspect.getsourcefile(cls)
    except TypeError:
        return None


# -- import strings ------------------------------------------------------------------------------


def _load_file(path_text: str, spec_text: str) -> Any:
    path = Path(path_text).resolve()
    if not path.is_file():
        raise PolicyError(f"{spec_text!r}: no such file {path}")
    check_safe_path(path)
    digest = hashlib.blake2b(str(path).encode(), digest_size=6).hexdigest()
    module_name = f"pressured_policy_file_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PolicyError(f"{spec_text!r}: cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def import_string(spec: str) -> type[Any]:
    """Load ``package.module:Class`` or ``/path/file.py:Class`` and check its contract."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise PolicyError(
            f"{spec!r}: an import string looks like 'package.module:Class' or "
            "'/path/to/file.py:Class'"
        )
    try:
        if module_name.endswith(".py"):
            module = _load_file(module_name, spec)
        else:
            _check_module_safe(module_name)
            module = importlib.import_module(module_name)
    except PolicyError:
        raise
    except UnsafeFileError as exc:
        raise PolicyError(f"{spec!r}: refused: {exc}") from None
    except Exception as exc:
        raise PolicyError(
            f"{spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc} "
            f"(import strings are found on sys.path: install the package or set PYTHONPATH)"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PolicyError(f"{spec!r}: module {module_name} has no {attr!r}") from None
    return check_contract(obj, spec)


# -- entry points --------------------------------------------------------------------------------


def _dist_label(point: EntryPoint) -> str:
    dist = point.dist
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


def _load_entry_point(point: EntryPoint) -> PolicySource:
    dist = _dist_label(point)
    label = f"policy {point.name!r} (entry point {point.value!r} from {dist})"
    try:
        _check_module_safe(point.module)
        loaded = point.load()
    except UnsafeFileError as exc:
        raise PolicyError(f"{label}: refused: {exc}") from None
    except Exception as exc:
        raise PolicyError(f"{label}: loading failed: {type(exc).__name__}: {exc}") from exc
    cls = check_contract(loaded, label)
    return PolicySource(
        point.name,
        cls,
        f"{ENTRY_POINT} {dist}",
        kind=ENTRY_POINT,
        distribution=dist,
        location=_location(cls),
    )


def _entry_points(name: str | None = None) -> list[EntryPoint]:
    points = entry_points(group=ENTRY_POINT_GROUP)
    selected = list(points if name is None else points.select(name=name))
    # Several copies of one distribution on sys.path show the same entry point twice.
    unique: dict[tuple[str, str, str], EntryPoint] = {}
    for point in selected:
        unique.setdefault((point.name, point.value, _dist_label(point)), point)
    return list(unique.values())


def discover_all() -> Discovery:
    """Every policy available by name: built-ins, then installed entry points; plugins that
    fail to load are reported as problems instead of hiding the others."""
    builtins = builtin_policies()
    sources = [
        PolicySource(name, cls, BUILTIN, kind=BUILTIN, location=_location(cls))
        for name, cls in builtins.items()
    ]
    problems: list[PluginProblem] = []
    for point in sorted(_entry_points(), key=lambda p: (p.name, _dist_label(p))):
        if point.name in builtins:
            problems.append(
                PluginProblem(point.name, _dist_label(point), "shadowed by the built-in policy")
            )
            continue
        try:
            sources.append(_load_entry_point(point))
        except PolicyError as exc:
            problems.append(PluginProblem(point.name, _dist_label(point), str(exc)))
    return Discovery(tuple(sources), tuple(problems))


def discover() -> list[PolicySource]:
    """Every policy available by name; raises PolicyError for the first broken plugin."""
    found = discover_all()
    if found.problems:
        first = found.problems[0]
        raise PolicyError(f"plugin {first.name!r} ({first.distribution}): {first.problem}")
    return list(found.sources)


def resolve(name: str) -> PolicySource:
    """Find the policy class for ``name``; raise PolicyError saying what was tried."""
    if ":" in name:
        cls = import_string(name)
        return PolicySource(name, cls, IMPORT_STRING, kind=IMPORT_STRING, location=_location(cls))
    builtin = builtin_policy(name)
    if builtin is not None:
        return PolicySource(name, builtin, BUILTIN, kind=BUILTIN, location=_location(builtin))
    points = _entry_points(name)
    if len(points) > 1:
        dists = ", ".join(sorted(_dist_label(p) for p in points))
        raise PolicyError(
            f"policy {name!r} is declared by more than one installed distribution ({dists}); "
            "uninstall one or name the class by import string"
        )
    if points:
        return _load_entry_point(points[0])
    known = ", ".join(sorted(BUILTIN_CLASSES))
    raise PolicyError(
        f"unknown policy {name!r}: not a built-in ({known}), not an installed "
        f"'{ENTRY_POINT_GROUP}' entry point, and not a 'module:Class' import string"
    )


def _describe_validation(exc: ValidationError) -> tuple[str, str]:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if "input" in first and first["type"] == "extra_forbidden":
        message = "unknown option (typo?)"
    extra = len(exc.errors()) - 1
    if extra:
        message += f" (and {extra} more problem{'s' if extra > 1 else ''})"
    return loc, message


def instantiate(name: str, options: dict[str, Any], field: str) -> tuple[Policy, PolicySource]:
    """Resolve, validate options and construct. ``field`` is the config path for errors,
    e.g. ``scopes.0.policies.1``; a bad option becomes ``scopes.0.policies.1.options.limit``."""
    try:
        source = resolve(name)
    except PolicyError as exc:
        raise ConfigError(f"{field}.name", str(exc)) from None
    try:
        parsed = source.policy_class.Options.model_validate(options)
    except ValidationError as exc:
        loc, message = _describe_validation(exc)
        path = f"{field}.options" + (f".{loc}" if loc else "")
        raise ConfigError(path, f"{message} (policy {name!r}, {source.origin})") from None
    try:
        policy = source.policy_class(parsed)
    except Exception as exc:
        raise ConfigError(
            field, f"policy {name!r} ({source.origin}) failed to start: {exc!r}"
        ) from exc
    return policy, source
