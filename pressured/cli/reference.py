"""The configuration reference, generated from the pydantic models so it cannot drift.

``python -m pressured.cli.reference`` rewrites ``docs/configuration.md`` and
``examples/pressured.full.toml``;
``pressured check --reference`` prints the same Markdown and ``pressured check --schema`` the
JSON schema. A test compares the committed document with :func:`render_markdown`.
"""

from __future__ import annotations

import json
import sys
import textwrap
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from pressured.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "configuration.md"
FULL_EXAMPLE_PATH = ROOT / "examples" / "pressured.full.toml"

# Keys whose default is "unset" cannot be written in TOML; the full example shows them
# commented out with a value worth copying.
_UNSET_EXAMPLES: dict[str, Any] = {
    "scopes[].cgroup": "/jobs",
    "scopes[].memcg_v1": "/jobs",
    "reaper.nice": -5,
    "journal.path": "/var/lib/pressured/kills.jsonl",
    "hooks.pre_kill[].url": "http://127.0.0.1:8080/pressured/pre-kill",
    "hooks.post_kill[].command": ["/usr/local/libexec/pressured-notify"],
    "guard.protect[].cmdline": "^postgres: ",
    "guard.protect[].uid": 999,
    "guard.protect[].cgroup": "/system.slice/postgresql.service",
}
# Hook lists are empty by default; one entry each shows their keys.
_EXAMPLE_HOOKS = {
    "pre_kill": [{"command": ["/bin/true"], "timeout_ms": 200.0}],
    "post_kill": [{"url": "http://127.0.0.1:8080/pressured/kill", "timeout_ms": 2000.0}],
}
# A protection rule is a list of tables with nothing in it by default: one example shows its
# keys (a name only counts beside what the process cannot forge: here its executable).
_EXAMPLE_PROTECT_RULES = [
    {
        "name": "postgres",
        "cmdline": None,
        "exe": "/usr/lib/postgresql/15/bin/postgres",
        "uid": None,
        "cgroup": None,
    }
]

# Units follow from the key's suffix; every duration and share in the tree is named this way.
_UNITS = (
    ("_per_s", "per second"),
    ("_ms", "milliseconds"),
    ("_s", "seconds"),
    ("_percent", "percent"),
    ("_bytes", "bytes"),
    ("_mib", "MiB"),
)


@dataclass(frozen=True, slots=True)
class Key:
    """One leaf key of the configuration."""

    section: tuple[str, ...]
    """Table names from the root; ``[]`` marks an array of tables (``("scopes[]", "levels[]")``)."""
    name: str
    type: str
    default: Any
    required: bool
    unit: str
    constraints: str
    description: str

    @property
    def dotted(self) -> str:
        return ".".join((*self.section, self.name))

    @property
    def env(self) -> str:
        parts = [part.replace("[]", "__0") for part in (*self.section, self.name)]
        return ENV_PREFIX + "__".join(parts).upper()


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model, is_array) when the annotation is a model or a tuple of models."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return args[0], True
    return None, False


def type_name(annotation: Any) -> str:
    """A short, TOML-minded type: ``float``, ``list of str``, ``str or none``, ``"a" | "b"``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        names = [type_name(arg) for arg in args if arg is not type(None)]
        optional = " or unset" if type(None) in args else ""
        return " or ".join(names) + optional
    if origin is tuple:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "table"
    if annotation is typing.Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _constraints(info: FieldInfo) -> str:
    words = []
    for item in info.metadata:
        for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attribute, None)
            if value is not None:
                words.append(
                    f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}"
                )
        if isinstance(item, annotated_types.MinLen):
            words.append(f"at least {item.min_length} long")
    return ", ".join(words)


def _unit(name: str) -> str:
    for suffix, unit in _UNITS:
        if name.endswith(suffix):
            return unit
    return ""


def iter_keys(model: type[BaseModel] = Settings, section: tuple[str, ...] = ()) -> Iterator[Key]:
    """Every leaf key, depth first, in the models' field order."""
    for name, info in model.model_fields.items():
        child, is_array = _model_of(info.annotation)
        if child is not None:
            yield from iter_keys(child, (*section, name + ("[]" if is_array else "")))
            continue
        required = info.is_required()
        yield Key(
            section=section,
            name=name,
            type=type_name(info.annotation),
            default=None
            if required
            else to_jsonable_python(info.get_default(call_default_factory=True), fallback=repr),
            required=required,
            unit=_unit(name),
            constraints=_constraints(info),
            description=(info.description or "").replace("\n", " "),
        )


def iter_sections(
    model: type[BaseModel] = Settings, section: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], type[BaseModel], str]]:
    """(section, model, the parent field's description) for every table, the root first."""
    yield section, model, ""
    for name, info in model.model_fields.items():
        child, is_array = _model_of(info.annotation)
        if child is not None:
            inner = (*section, name + ("[]" if is_array else ""))
            first = True
            for sub, sub_model, description in iter_sections(child, inner):
                yield sub, sub_model, (info.description or "") if first else description
                first = False


def toml_header(section: tuple[str, ...]) -> str:
    if not section:
        return "(top level)"
    dotted = ".".join(part.removesuffix("[]") for part in section)
    return f"[[{dotted}]]" if section[-1].endswith("[]") else f"[{dotted}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default_text(key: Key) -> str:
    if key.required:
        return "(required)"
    if key.default is None:
        return "unset"
    return f"`{json.dumps(key.default)}`"


def render_markdown() -> str:
    """docs/configuration.md."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from pressured/config.py by `python -m pressured.cli.reference`;",
        "     do not edit by hand (a test fails when this file and the models differ). -->",
        "",
        "pressured reads one TOML file (`pressured run -c FILE`, default",
        "`/etc/pressured/pressured.toml`). Every key is optional; an unknown key is an error.",
        "Precedence, lowest first: built-in defaults < the file < `PRESSURED_*` environment",
        "variables < command-line flags. `pressured check -c FILE` validates a file and reports",
        "every problem at once; `pressured check --schema` prints the JSON schema.",
        "",
        "**Environment variables**: `PRESSURED_<SECTION>__<KEY>` (double underscores between",
        "levels), a number picks an entry of a list of tables (`PRESSURED_SCOPES__0__CGROUP`),",
        "and list or table values are JSON (`PRESSURED_GUARD__PROTECT_UIDS='[0, 33]'`). An",
        "invalid value is reported with the variable's name.",
        "",
        "**Cgroup names** (`scopes.cgroup`, `scopes.memcg_v1`, `guard.protect_cgroups`,",
        "`--cgroup`, `pressured.watch(...)`) are accepted as a path relative to the cgroup2",
        "mount (`/jobs` or `jobs`), an absolute path under the mount (`/sys/fs/cgroup/jobs`),",
        "or a line of `/proc/PID/cgroup` (`0::/jobs`; `4:memory:/jobs` for `memcg_v1`).",
        "",
        "`examples/pressured.full.toml` sets every key below to its default.",
        "",
    ]
    keys = list(iter_keys())
    for section, model, description in iter_sections():
        own = [key for key in keys if key.section == section]
        if not own:
            continue
        lines.append(f"## `{toml_header(section)}`")
        lines.append("")
        summary = description or (model.__doc__ or "").strip().split("\n\n")[0]
        if summary:
            lines.append(" ".join(summary.split()))
            lines.append("")
        lines.append("| key | type | default | unit | allowed | description |")
        lines.append("|---|---|---|---|---|---|")
        for key in own:
            lines.append(
                f"| `{key.name}` | {_cell(key.type)} | {_cell(_default_text(key))} | "
                f"{key.unit} | {_cell(key.constraints)} | {_cell(key.description)} |"
            )
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(value)


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(" ".join(text.split()), 94)]


def _render_table(
    lines: list[str],
    model: type[BaseModel],
    data: Mapping[str, Any],
    section: tuple[str, ...],
) -> None:
    if section:
        if lines:
            lines.append("")
        lines.append(toml_header(section))
    children = []
    for name, info in model.model_fields.items():
        child, is_array = _model_of(info.annotation)
        if child is not None:
            children.append((name, child, is_array))
            continue
        lines.extend(_comment(info.description or ""))
        value = data.get(name)
        if value is None:
            dotted = ".".join((*section, name))
            example = _UNSET_EXAMPLES.get(dotted, "")
            lines.append(f"# {name} = {_toml_value(example)}    (unset by default)")
        else:
            lines.append(f"{name} = {_toml_value(value)}")
    for name, child, is_array in children:
        inner = (*section, name + ("[]" if is_array else ""))
        items = data.get(name) or []
        for item in items if is_array else [data.get(name) or {}]:
            _render_table(lines, child, item, inner)


def render_full_toml() -> str:
    """examples/pressured.full.toml: every key, at its default, with its description."""
    data = Settings().model_dump(mode="json")
    data["hooks"] = _EXAMPLE_HOOKS
    data["guard"]["protect"] = _EXAMPLE_PROTECT_RULES
    lines = [
        "# Every configuration key, at its default, with its description. Generated from",
        "# pressured/config.py by `python -m pressured.cli.reference`; the reference is",
        "# docs/configuration.md. Keys unset by default are shown commented out.",
        "# The two hooks at the end and the [[guard.protect]] rule are examples (both are",
        "# empty by default): remove them.",
        "#",
        "#   pressured check -c examples/pressured.full.toml",
    ]
    _render_table(lines, Settings, data, ())
    return "\n".join(lines) + "\n"


def json_schema() -> dict[str, Any]:
    return Settings.model_json_schema()


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite docs/configuration.md and examples/pressured.full.toml from the models."""
    if list(sys.argv[1:] if argv is None else argv):
        print("usage: python -m pressured.cli.reference  (rewrites both files)", file=sys.stderr)
        return 2
    for target, text in ((DOC_PATH, render_markdown()), (FULL_EXAMPLE_PATH, render_full_toml())):
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
