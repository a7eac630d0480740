"""The policy resolver: built-ins, entry points, import strings, contract and safety checks."""

from __future__ import annotations

import os
import re
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from pressured.errors import ConfigError, PolicyError, UnsafeFileError
from pressured.policies.base import BasePolicy, Decision, PolicyOptions
from pressured.policies.registry import (
    builtin_policies,
    check_contract,
    check_safe_path,
    discover,
    discover_all,
    instantiate,
    resolve,
)
from pressured.snapshot import Snapshot

BUILTINS = {
    "culprit",
    "oom_score",
    "largest",
    "adj_tiers",
    "swap_usage",
    "cgroup_size_growth",
    "cgroup_pressure",
}

POLICY_SOURCE = """
from typing import ClassVar
from pydantic import Field
from pressured.policies.base import BasePolicy, Decision, PolicyOptions

class Options(PolicyOptions):
    limit: int = Field(default=1, ge=0)

class {cls}(BasePolicy[Options]):
    name: ClassVar[str] = "{name}"
    Options = Options

    async def __call__(self, snapshot):
        return Decision.no_action("ok")
"""


class GoodOptions(PolicyOptions):
    limit: int = 3


class Good(BasePolicy[GoodOptions]):
    name: ClassVar[str] = "good"
    Options = GoodOptions

    async def __call__(self, snapshot: Snapshot) -> Decision:
        return Decision.no_action("fine")


class Exploding(Good):
    def __init__(self, options: GoodOptions) -> None:
        raise RuntimeError("cannot start")


@pytest.fixture
def clean_modules() -> Iterator[None]:
    """Forget modules a test imported from its temporary folder."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_modules: None) -> Path:
    """A private folder on sys.path for modules and fake distributions."""
    folder = tmp_path / "site"
    folder.mkdir(mode=0o755)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def _module(folder: Path, text: str) -> str:
    name = f"plug_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(text))
    return name


def _distribution(folder: Path, dist: str, entry_points: dict[str, str]) -> None:
    info = folder / f"{dist.replace('-', '_')}-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2\n")
    lines = "\n".join(f"{name} = {value}" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[pressured.policies]\n{lines}\n")


def test_builtins_are_all_registered() -> None:
    """Every built-in is available by its name and passes the contract."""
    policies = builtin_policies()
    assert set(policies) == BUILTINS
    for name, cls in policies.items():
        assert check_contract(cls, name) is cls


def test_resolve_builtin() -> None:
    """A built-in name resolves with origin 'builtin'."""
    assert resolve("largest").origin == "builtin"


def test_resolve_import_string() -> None:
    """A module:Class import string resolves to that class."""
    source = resolve("tests.test_registry:Good")
    assert source.policy_class is Good
    assert source.kind == "import string"


def test_import_string_of_a_file(tmp_path: Path, clean_modules: None) -> None:
    """/path/file.py:Class loads a single file by path."""
    path = tmp_path / "mine.py"
    path.write_text(POLICY_SOURCE.format(cls="Mine", name="mine"))
    assert resolve(f"{path}:Mine").policy_class.name == "mine"


def test_import_error_names_the_module(plugin_dir: Path) -> None:
    """A module that fails to import gives an error naming it and the cause."""
    name = _module(plugin_dir, "raise ImportError('needs libfoo')\n")
    with pytest.raises(PolicyError, match=f"importing {name} failed: ImportError: needs libfoo"):
        resolve(f"{name}:Policy")


def test_missing_module_says_where_it_looked() -> None:
    """An unknown module hints at sys.path and PYTHONPATH."""
    with pytest.raises(PolicyError, match="PYTHONPATH"):
        resolve("no_such_module_xyz:Policy")


def test_missing_class_names_it(plugin_dir: Path) -> None:
    """A module without the class gives 'has no'."""
    name = _module(plugin_dir, "x = 1\n")
    with pytest.raises(PolicyError, match="has no 'Policy'"):
        resolve(f"{name}:Policy")


def test_unknown_name_lists_the_builtins() -> None:
    """An unknown plain name says what was tried and lists the built-ins."""
    with pytest.raises(PolicyError, match="oom_score") as info:
        resolve("no_such_policy")
    assert "entry point" in str(info.value)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("Policy = 42", "not a class"),
        (
            "class Policy:\n    Options = NoOptions\n    async def __call__(self, s): ...",
            "'name'",
        ),
        ("class Policy:\n    name = 'p'\n    async def __call__(self, s): ...", "'Options'"),
        (
            "class Policy:\n    name = 'p'\n    Options = NoOptions\n"
            "    def __call__(self, s): ...",
            "async def __call__",
        ),
        (
            "class Policy:\n    name = 'p'\n    Options = NoOptions\n"
            "    async def __call__(self, s, extra): ...",
            "must take \\(self, snapshot\\)",
        ),
        (
            "class Policy:\n    name = 'p'\n    Options = NoOptions\n"
            "    def __init__(self): ...\n    async def __call__(self, s): ...",
            "__init__",
        ),
    ],
    ids=["not-class", "no-name", "no-options", "sync-call", "call-args", "init-args"],
)
def test_contract_is_checked_on_load(plugin_dir: Path, body: str, problem: str) -> None:
    """Contract mistakes are found when loading, each with its own message."""
    name = _module(plugin_dir, f"from pressured.policies.base import NoOptions\n{body}\n")
    with pytest.raises(PolicyError, match=problem):
        resolve(f"{name}:Policy")


def test_world_writable_module_is_refused(plugin_dir: Path) -> None:
    """A module others can write is refused before it runs."""
    name = _module(plugin_dir, "raise SystemExit('must not run')\n")
    os.chmod(plugin_dir / f"{name}.py", 0o666)  # noqa: S103 - the unsafe case under test
    with pytest.raises(PolicyError, match="writable by group or others"):
        resolve(f"{name}:Policy")


def test_group_writable_folder_is_refused(tmp_path: Path, clean_modules: None) -> None:
    """A file in a folder others can write to is refused."""
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, 0o775)  # noqa: S103 - the unsafe case under test
    path = folder / "pol.py"
    path.write_text(POLICY_SOURCE.format(cls="P", name="p"))
    with pytest.raises(PolicyError, match="writable by group or others"):
        resolve(f"{path}:P")


def test_sticky_world_writable_folder_is_accepted(tmp_path: Path) -> None:
    """A sticky folder such as /tmp is fine: others cannot replace our file there."""
    folder = tmp_path / "sticky"
    folder.mkdir()
    os.chmod(folder, 0o1777)  # noqa: S103 - a /tmp-like folder is the case
    path = folder / "pol.py"
    path.write_text("x = 1\n")
    check_safe_path(path)


def test_foreign_owner_is_refused(tmp_path: Path) -> None:
    """A file owned by another user is refused."""
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    path = tmp_path / "pol.py"
    path.write_text("x = 1\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(UnsafeFileError, match="owned by uid 65534"):
        check_safe_path(path)


def test_entry_point_resolves_with_its_distribution(plugin_dir: Path) -> None:
    """An installed entry point resolves and names its distribution and version."""
    module = _module(plugin_dir, POLICY_SOURCE.format(cls="Fake", name="fake_ep"))
    _distribution(plugin_dir, "fake-dist", {"fake_ep": f"{module}:Fake"})
    source = resolve("fake_ep")
    assert source.origin == "entry point fake-dist 1.2"
    assert source.distribution == "fake-dist 1.2"


def test_broken_entry_point_names_plugin_distribution_and_problem(plugin_dir: Path) -> None:
    """A plugin that fails to import is reported with its name, distribution and cause."""
    module = _module(plugin_dir, "import not_installed_dependency_xyz\n")
    _distribution(plugin_dir, "broken-dist", {"broken_ep": f"{module}:Policy"})
    with pytest.raises(PolicyError) as info:
        resolve("broken_ep")
    message = str(info.value)
    assert "'broken_ep'" in message
    assert "broken-dist 1.2" in message
    assert "not_installed_dependency_xyz" in message


def test_discover_all_reports_broken_plugins_and_keeps_the_rest(plugin_dir: Path) -> None:
    """One broken plugin does not hide the others from the listing."""
    good = _module(plugin_dir, POLICY_SOURCE.format(cls="Fine", name="fine_ep"))
    bad = _module(plugin_dir, "raise RuntimeError('bad plugin')\n")
    _distribution(plugin_dir, "good-dist", {"fine_ep": f"{good}:Fine"})
    _distribution(plugin_dir, "bad-dist", {"bad_ep": f"{bad}:Policy"})
    found = discover_all()
    names = {source.name for source in found.sources}
    assert BUILTINS | {"fine_ep"} <= names
    assert [(p.name, p.distribution) for p in found.problems] == [("bad_ep", "bad-dist 1.2")]
    with pytest.raises(PolicyError, match="bad_ep"):
        discover()


def test_entry_point_cannot_shadow_a_builtin(plugin_dir: Path) -> None:
    """A plugin named like a built-in is reported; the built-in is what resolves."""
    module = _module(plugin_dir, POLICY_SOURCE.format(cls="Shadow", name="largest"))
    _distribution(plugin_dir, "shadow-dist", {"largest": f"{module}:Shadow"})
    assert resolve("largest").origin == "builtin"
    problems = discover_all().problems
    assert any(p.name == "largest" and "shadowed" in p.problem for p in problems)


def test_same_name_from_two_distributions_is_ambiguous(plugin_dir: Path) -> None:
    """Two distributions declaring one name is an error naming both."""
    one = _module(plugin_dir, POLICY_SOURCE.format(cls="One", name="twin"))
    two = _module(plugin_dir, POLICY_SOURCE.format(cls="Two", name="twin"))
    _distribution(plugin_dir, "dist-one", {"twin": f"{one}:One"})
    _distribution(plugin_dir, "dist-two", {"twin": f"{two}:Two"})
    with pytest.raises(PolicyError, match=re.escape("dist-one 1.2, dist-two 1.2")):
        resolve("twin")


def test_instantiate_validates_options() -> None:
    """Options are parsed into the policy's model."""
    policy, _source = instantiate("tests.test_registry:Good", {"limit": 7}, "scopes.0.policies.1")
    assert isinstance(policy, Good)
    assert policy.options.limit == 7


def test_bad_option_names_the_dotted_field() -> None:
    """A bad option value points at scopes.N.policies.M.options.<field>."""
    with pytest.raises(ConfigError) as info:
        instantiate("tests.test_registry:Good", {"limit": "many"}, "scopes.0.policies.1")
    assert info.value.field == "scopes.0.policies.1.options.limit"
    assert "tests.test_registry:Good" in info.value.reason


def test_unknown_option_is_a_typo_error() -> None:
    """An unknown option key is refused and called a typo."""
    with pytest.raises(ConfigError) as info:
        instantiate("largest", {"min_mb": 5}, "scopes.0.policies.0")
    assert info.value.field == "scopes.0.policies.0.options.min_mb"
    assert "typo" in info.value.reason


def test_nested_pattern_error_has_its_full_path() -> None:
    """A bad regex inside a pattern list is located down to the field."""
    with pytest.raises(ConfigError) as info:
        instantiate(
            "oom_score", {"prefer": ["ok", {"cmdline": "(unclosed"}]}, "scopes.1.policies.0"
        )
    assert info.value.field == "scopes.1.policies.0.options.prefer.1.cmdline"


def test_unknown_policy_points_at_the_name_field() -> None:
    """An unresolvable policy is reported on the .name field."""
    with pytest.raises(ConfigError) as info:
        instantiate("nope", {}, "scopes.0.policies.3")
    assert info.value.field == "scopes.0.policies.3.name"


def test_constructor_failure_is_a_config_error() -> None:
    """A policy whose __init__ raises is refused at load time with its name."""
    with pytest.raises(ConfigError, match="failed to start: RuntimeError"):
        instantiate("tests.test_registry:Exploding", {}, "scopes.0.policies.0")
