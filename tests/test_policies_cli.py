"""``pressured policies``: the listing of built-ins and plugins with their options."""

from __future__ import annotations

import json

import pytest

from pressured.cli import main
from pressured.cli.policies import describe_options, type_name
from pressured.policies.oom_score import OomScoreOptions
from pressured.policies.patterns import ProcessPattern


def test_text_lists_every_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    """The text listing names each built-in with its origin."""
    assert main(["policies"]) == 0
    out = capsys.readouterr().out
    for name in ("oom_score", "largest", "adj_tiers", "swap_usage", "cgroup_size_growth"):
        assert f"{name}  [builtin]" in out
    assert "sort_by" in out


def test_json_has_options_with_type_default_description(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--json gives each option's name, type, default and description."""
    assert main(["policies", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    policies = {entry["name"]: entry for entry in payload["policies"]}
    option = {o["name"]: o for o in policies["oom_score"]["options"]}["sort_by"]
    assert option["type"] == "Literal['oom_score', 'rss']"
    assert option["default"] == "oom_score"
    assert option["description"]
    assert payload["entry_point_group"] == "pressured.policies"


def test_named_import_string_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    """An import string can be inspected before it is put in a configuration."""
    assert main(["policies", "--json", "tests.test_registry:Good"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["policies"][0]["kind"] == "import string"
    assert payload["policies"][0]["options"][0]["name"] == "limit"


def test_unknown_name_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    """A policy that cannot load exits 1 and says why on stderr."""
    assert main(["policies", "no_such_policy"]) == 1
    assert "unknown policy 'no_such_policy'" in capsys.readouterr().err


def test_type_names_are_short() -> None:
    """Types print without module prefixes."""
    assert type_name(float) == "float"
    assert type_name(tuple[ProcessPattern, ...]) == "tuple[ProcessPattern, ...]"
    assert type_name(int | None) == "int | None"


def test_required_options_say_so() -> None:
    """An option without a default is marked required."""
    from pydantic import BaseModel

    class Needs(BaseModel):
        names: list[str]

    (row,) = describe_options(Needs)
    assert row["required"] is True
    assert row["default"] is None


def test_defaults_are_json_values() -> None:
    """Defaults come out as JSON-ready values."""
    rows = {row["name"]: row for row in describe_options(OomScoreOptions)}
    assert rows["prefer"]["default"] == []
    assert rows["prefer_bonus"]["default"] == 300
