"""The example configurations in examples/policies load, and their policies start."""

from __future__ import annotations

from pathlib import Path

import pytest

from pressured.config import load_settings
from pressured.policies.chain import PolicyChain
from pressured.policies.registry import builtin_policies, resolve
from pressured.testing import assert_kills, make_process, make_snapshot, run_policy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "policies"
CONFIGS = sorted(EXAMPLES.glob("*.toml"))


@pytest.fixture(autouse=True)
def _examples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """custom_policy.toml names 'custom_policy:...', found through sys.path (PYTHONPATH)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


def test_every_builtin_has_an_example() -> None:
    """Each built-in policy has its own example file."""
    assert {path.stem for path in CONFIGS} >= set(builtin_policies())


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_example_loads_and_its_chain_starts(path: Path) -> None:
    """The file validates and every policy in it resolves with its options."""
    settings = load_settings(path, environ={})
    for index, scope in enumerate(settings.scopes):
        chain = PolicyChain.from_settings(scope.policies, f"scopes.{index}.policies")
        assert chain.links


def test_custom_policy_by_file_path() -> None:
    """The custom policy also loads as /path/to/file.py:Class."""
    source = resolve(f"{EXAMPLES / 'custom_policy.py'}:OldestHog")
    assert source.policy_class.name == "oldest_hog"


def test_custom_policy_kills_the_oldest_hog() -> None:
    """The example policy chooses the oldest process above its size floor."""
    cls = resolve("custom_policy:OldestHog").policy_class
    snapshot = make_snapshot(
        processes=[
            make_process(10, rss_mib=300, start_time=500),
            make_process(11, rss_mib=900, start_time=900),
            make_process(12, rss_mib=50, start_time=1),
        ]
    )
    assert_kills(run_policy(cls, snapshot, min_mib=256), pid=10)
