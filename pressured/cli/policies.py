"""``pressured policies``: list the built-in and installed policies, where each came from, and
their options (name, type, default, description) read from each policy's pydantic model.

Give names (built-in, entry point or ``module:Class`` import string) to show only those.
Exit codes: 0 listed; 1 an installed plugin (or a named policy) failed to load; the others are
still listed, with the problem.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from pressured.errors import PolicyError
from pressured.policies.registry import (
    ENTRY_POINT_GROUP,
    PluginProblem,
    PolicySource,
    discover_all,
    resolve,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="only these policies (built-in name, entry point, or module:Class)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


_QUALIFIED = re.compile(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")


def type_name(annotation: Any) -> str:
    """A short readable type: ``float``, ``tuple[ProcessPattern, ...]``, ``Literal['a', 'b']``."""
    if inspect.isclass(annotation) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return _QUALIFIED.sub(r"\1", str(annotation).replace("NoneType", "None"))


def describe_options(model: type[BaseModel]) -> list[dict[str, Any]]:
    """Each option of a policy's ``Options`` model: name, type, default, description."""
    rows = []
    for name, info in model.model_fields.items():
        required = info.is_required()
        default = None if required else info.get_default(call_default_factory=True)
        rows.append(
            {
                "name": info.alias or name,
                "type": type_name(info.annotation),
                "required": required,
                "default": to_jsonable_python(default, fallback=repr),
                "description": info.description or "",
            }
        )
    return rows


def _summary(cls: type[Any]) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.strip().split("\n\n", 1)[0].replace("\n", " ")


def describe_source(source: PolicySource) -> dict[str, Any]:
    return {
        "name": source.name,
        "class": f"{source.policy_class.__module__}:{source.policy_class.__qualname__}",
        "kind": source.kind,
        "origin": source.origin,
        "distribution": source.distribution,
        "location": source.location,
        "summary": _summary(source.policy_class),
        "options": describe_options(source.policy_class.Options),
    }


def _collect(names: list[str]) -> tuple[list[PolicySource], list[PluginProblem]]:
    if not names:
        found = discover_all()
        return list(found.sources), list(found.problems)
    sources: list[PolicySource] = []
    problems: list[PluginProblem] = []
    for name in names:
        try:
            sources.append(resolve(name))
        except PolicyError as exc:
            problems.append(PluginProblem(name, "-", str(exc)))
    return sources, problems


def _print_text(entries: list[dict[str, Any]], problems: list[PluginProblem]) -> None:
    out = sys.stdout
    for entry in entries:
        out.write(f"{entry['name']}  [{entry['origin']}]  {entry['class']}\n")
        if entry["location"]:
            out.write(f"    from {entry['location']}\n")
        if entry["summary"]:
            out.write(f"    {entry['summary']}\n")
        options = entry["options"]
        if not options:
            out.write("    options: none\n\n")
            continue
        out.write("    options:\n")
        width_name = max(len(o["name"]) for o in options)
        width_type = max(len(o["type"]) for o in options)
        for option in options:
            default = "(required)" if option["required"] else json.dumps(option["default"])
            out.write(
                f"      {option['name']:<{width_name}}  {option['type']:<{width_type}}  "
                f"= {default}\n"
            )
            if option["description"]:
                out.write(f"      {'':<{width_name}}  {option['description']}\n")
        out.write("\n")
    if not any(entry["kind"] != "builtin" for entry in entries) and not problems:
        out.write(f"No plugins installed (entry point group '{ENTRY_POINT_GROUP}').\n")
    for problem in problems:
        sys.stderr.write(
            f"error: policy {problem.name!r} ({problem.distribution}): {problem.problem}\n"
        )


def run(args: argparse.Namespace) -> int:
    sources, problems = _collect(list(args.names))
    entries = [describe_source(source) for source in sources]
    if args.json:
        payload = {
            "entry_point_group": ENTRY_POINT_GROUP,
            "policies": entries,
            "problems": [
                {"name": p.name, "distribution": p.distribution, "problem": p.problem}
                for p in problems
            ],
        }
        json.dump(payload, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(entries, problems)
    return 1 if problems else 0
