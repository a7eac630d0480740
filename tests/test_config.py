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
        ({"scopes": [{"cgroup": "relative/path"}]}, "scopes.0.cgroup"),
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
