"""Configuration: defaults, precedence, field-path errors, and the check command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pressured.config import Settings, env_overrides, load_settings, validate_settings
from pressured.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_defaults_watch_the_system_with_two_levels_and_oom_score() -> None:
    """Settings() alone is a working configuration."""
    settings = Settings()
    (scope,) = settings.scopes
    assert scope.cgroup is None
    assert [(lv.name, lv.kind) for lv in scope.levels] == [("some", "some"), ("full", "full")]
    assert [p.name for p in scope.policies] == ["culprit", "oom_score"]


def test_precedence_file_then_environment_then_command_line(tmp_path: Path) -> None:
    """defaults < file < PRESSURED_* < overrides."""
    path = write(tmp_path, "[daemon]\nloop = 'asyncio'\nlog_level = 'debug'\nio_threads = 3\n")
    env = {"PRESSURED_DAEMON__LOG_LEVEL": "warning", "PRESSURED_DAEMON__IO_THREADS": "4"}
    settings = load_settings(path, environ=env, overrides={"daemon": {"io_threads": 5}})
    assert settings.daemon.loop == "asyncio"
    assert settings.daemon.log_level == "warning"
    assert settings.daemon.io_threads == 5


def test_cgroup_flag_keeps_the_first_scopes_policies(tmp_path: Path) -> None:
    """--cgroup changes where the first scope looks, not how it decides."""
    path = write(
        tmp_path,
        "[[scopes]]\n[[scopes.policies]]\nname = 'oom_score'\noptions = { min_rss_mib = 5 }\n",
    )
    settings = load_settings(path, environ={}, cgroup="/jobs")
    assert settings.scopes[0].cgroup == "/jobs"
    assert settings.scopes[0].policies[0].options == {"min_rss_mib": 5}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"daemon": {"lopo": "uvloop"}}, "daemon.lopo"),
        ({"daemon": {"loop": "trio"}}, "daemon.loop"),
        (
            {"scopes": [{"levels": [{"name": "a", "threshold_ms": 3000, "window_ms": 2000}]}]},
            "scopes.0.levels.0",
        ),
        ({"scopes": [{"cgroup": "/proc/self/cgroup"}]}, "scopes.0.cgroup"),
        ({"guard": {"protect_cmdline": ["("]}}, "guard.protect_cmdline"),
        ({"reaper": {"cpus": [4096]}}, "reaper.cpus"),
        ({"scopes": [{}, {}]}, "<root>"),
    ],
)
def test_errors_name_the_field(data: dict[str, object], field: str) -> None:
    """Every invalid value becomes a ConfigError whose field is the dotted path."""
    with pytest.raises(ConfigError) as caught:
        validate_settings(data)
    assert caught.value.field == field


def test_env_overrides_nest_on_double_underscores() -> None:
    """PRESSURED_A__B=1 -> {'a': {'b': '1'}}; other variables are ignored."""
    assert env_overrides({"PRESSURED_METRICS__PORT": "0", "HOME": "/root"}) == {
        "metrics": {"port": "0"}
    }


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    """A syntax error says which file and that it is not TOML."""
    path = write(tmp_path, "[daemon\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert caught.value.source == str(path) and "TOML" in caught.value.reason


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pressured", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_prints_the_effective_configuration_with_adjusted_windows(tmp_path: Path) -> None:
    """'pressured check' prints JSON including each level's kernel-effective trigger."""
    path = write(tmp_path, "[daemon]\ndry_run = true\n")
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 0, done.stderr
    effective = json.loads(done.stdout)
    assert effective["daemon"]["dry_run"] is True
    assert effective["scopes"][0]["levels"][0]["effective"].startswith("memory some")


def test_check_exits_2_on_a_bad_policy_option(tmp_path: Path) -> None:
    """Policy options are validated by 'check' too, with the path to the option."""
    path = write(
        tmp_path,
        "[[scopes]]\n[[scopes.policies]]\nname = 'oom_score'\noptions = { min_rss_mib = -1 }\n",
    )
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 2
    assert "scopes.0.policies.0.options.min_rss_mib" in done.stderr


def test_world_writable_config_is_refused(tmp_path: Path) -> None:
    """A configuration others can write is refused before it is parsed."""
    path = write(tmp_path, "")
    path.chmod(0o666)
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 2
    assert "writable by group or others" in done.stderr


# -- the configuration documents itself ---------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "regenerate with: python -m pressured.cli.reference"


def test_reference_doc_matches_the_models() -> None:
    """docs/configuration.md is exactly what the models generate (it cannot drift)."""
    from pressured.cli.reference import DOC_PATH, render_markdown

    assert DOC_PATH.read_text() == render_markdown(), REGENERATE


def test_full_example_matches_the_models() -> None:
    """examples/pressured.full.toml is exactly what the models generate."""
    from pressured.cli.reference import FULL_EXAMPLE_PATH, render_full_toml

    assert FULL_EXAMPLE_PATH.read_text() == render_full_toml(), REGENERATE


def _keys_in_toml(text: str) -> set[str]:
    """Dotted keys set in a TOML text, plus those shown commented out (``# key = ...``) under
    their table header; ``[]`` marks arrays of tables, as the reference writes them."""
    import re
    import tomllib

    found: set[str] = set()

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                dotted = f"{prefix}{key}"
                if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                    for item in value:
                        walk(item, f"{dotted}[].")
                elif isinstance(value, dict) and key != "options":
                    walk(value, f"{dotted}.")
                else:
                    found.add(dotted)

    walk(tomllib.loads(text), "")
    from pressured.cli.reference import iter_keys

    arrays = {part for key in iter_keys() for part in key.section if part.endswith("[]")}
    section = ""
    for line in text.splitlines():
        header = re.match(r"^\[\[?([\w.]+)\]\]?$", line)
        if header:
            parts = header.group(1).split(".")
            section = ".".join(p + "[]" if p + "[]" in arrays else p for p in parts)
            continue
        commented = re.match(r"^# (\w+) = ", line)
        if commented:
            found.add(f"{section}.{commented.group(1)}" if section else commented.group(1))
    return found


def test_full_example_has_every_key_and_passes_check() -> None:
    """Every key of the models appears in the full example, which `pressured check` accepts."""
    from pressured.cli.reference import FULL_EXAMPLE_PATH, iter_keys

    missing = {key.dotted for key in iter_keys()} - _keys_in_toml(FULL_EXAMPLE_PATH.read_text())
    assert missing == set()
    done = run_cli("check", "-c", str(FULL_EXAMPLE_PATH))
    assert done.returncode == 0, done.stderr


def test_every_key_has_a_description_and_appears_in_the_reference() -> None:
    """No undocumented key: each has a description, and the reference lists it."""
    from pressured.cli.reference import iter_keys, render_markdown

    keys = list(iter_keys())
    assert [key.dotted for key in keys if not key.description] == []
    reference = render_markdown()
    assert [key.dotted for key in keys if f"| `{key.name}` |" not in reference] == []


def test_schema_from_check_accepts_the_full_example_and_rejects_a_typo() -> None:
    """`pressured check --schema` is a JSON schema the full example satisfies and a typo
    breaks."""
    import tomllib

    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra")
    done = run_cli("check", "--schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    data = tomllib.loads((ROOT / "examples" / "pressured.full.toml").read_text())
    jsonschema.validate(data, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**data, "daemon": {**data["daemon"], "lopo": "uvloop"}}, schema)


# -- values from the environment, names the kernel can match ------------------------------------


def test_env_lists_are_json() -> None:
    """PRESSURED_GUARD__PROTECT_UIDS='[0, 33]' sets a list; bad JSON names the variable."""
    settings = load_settings(None, environ={"PRESSURED_GUARD__PROTECT_UIDS": "[0, 33]"})
    assert settings.guard.protect_uids == (0, 33)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"PRESSURED_GUARD__PROTECT_NAMES": '["sshd",'})
    assert "PRESSURED_GUARD__PROTECT_NAMES" in str(caught.value)


def test_protected_names_longer_than_comm_are_refused() -> None:
    """A 16-character protect_names entry can never match comm: refused, shortened form named."""
    with pytest.raises(ConfigError) as caught:
        validate_settings({"guard": {"protect_names": ["sshd", "systemd-journald"]}})
    assert caught.value.field == "guard.protect_names"
    assert "'systemd-journal'" in caught.value.reason
    validate_settings({"guard": {"protect_names": ["systemd-journal"]}})


def test_kernel_keeps_15_characters_of_a_process_name(tmp_path: Path) -> None:
    """The fact the rule above rests on: a program named with 16+ characters has a 15-character
    comm (checked on the running kernel)."""
    program = tmp_path / "sixteen-chars-xx"
    program.symlink_to("/bin/cat")
    done = subprocess.run(
        [str(program), "/proc/self/comm"], capture_output=True, text=True, check=True
    )
    comm = done.stdout.strip()
    assert comm == "sixteen-chars-x"


def test_sidecar_mode_makes_the_default_scope_the_pod() -> None:
    """daemon.mode = 'sidecar': scopes without a cgroup mean 'pod'; 'system' stays node-wide."""
    settings = validate_settings({"daemon": {"mode": "sidecar"}})
    assert [scope.cgroup for scope in settings.scopes] == ["pod"]
    explicit = validate_settings({"daemon": {"mode": "sidecar"}, "scopes": [{"cgroup": "system"}]})
    assert [scope.cgroup for scope in explicit.scopes] == [None]


# -- living beside what is already installed ----------------------------------------------------

MIGRATING = sorted((ROOT / "examples" / "migrating").glob("*.toml"))


@pytest.mark.parametrize("path", MIGRATING, ids=lambda path: path.name)
def test_migration_examples_pass_check(path: Path) -> None:
    """Each docs/migrating.md example passes `pressured check` with its policies loaded, and
    starts in dry-run."""
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["daemon"]["dry_run"] is True


def test_migration_guide_covers_each_tool_with_its_example() -> None:
    """docs/migrating.md has a section and a linked example for every tool it replaces."""
    guide = (ROOT / "docs" / "migrating.md").read_text()
    for tool, example in (
        ("earlyoom", "earlyoom.toml"),
        ("nohang", "nohang.toml"),
        ("systemd-oomd", "systemd-oomd.toml"),
        ("oomd", "oomd.toml"),
    ):
        assert f"\n## {tool}\n" in guide
        assert f"(../examples/migrating/{example})" in guide
    assert {path.name for path in MIGRATING} == {
        "earlyoom.toml",
        "nohang.toml",
        "systemd-oomd.toml",
        "oomd.toml",
    }


def test_check_reports_every_scopes_policy_problem_at_once(tmp_path: Path) -> None:
    """Bad policy options in two scopes: `check` names both, not just the first."""
    path = write(
        tmp_path,
        "[[scopes]]\ncgroup = '/a'\n[[scopes.policies]]\nname = 'oom_score'\n"
        "options = { min_rss_mib = -1 }\n[[scopes]]\n[[scopes.policies]]\nname = 'nosuch'\n",
    )
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 2
    assert "scopes.0.policies.0.options.min_rss_mib" in done.stderr
    assert "scopes.1.policies.0.name" in done.stderr


def test_check_reports_every_unusable_hook(tmp_path: Path) -> None:
    """`check` tests hooks as the daemon does before arming: a missing program and an https
    URL are both named, each with its field (before, `check` accepted both)."""
    path = write(
        tmp_path,
        f"[[hooks.pre_kill]]\ncommand = ['{tmp_path}/no-such-program']\n"
        "[[hooks.post_kill]]\nurl = 'https://example.invalid/kill'\n",
    )
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 2, done.stdout
    assert "hooks.pre_kill.0.command" in done.stderr
    assert "hooks.post_kill.0.url" in done.stderr


def test_check_reports_every_invalid_value_at_once(tmp_path: Path) -> None:
    """Three bad values in one file: all three are printed, each with its field."""
    path = write(
        tmp_path,
        "[daemon]\nio_threads = 99\nloop = 'trio'\n[metrics]\nport = 70000\n",
    )
    done = run_cli("check", "-c", str(path))
    assert done.returncode == 2
    for field in ("daemon.io_threads", "daemon.loop", "metrics.port"):
        assert field in done.stderr
