"""Bad input never becomes a traceback: generated configuration files end in a field-path
error and exit 2; malformed /proc entries are skipped with one log line each."""

from __future__ import annotations

import contextlib
import io
import os
import re
import string
from collections.abc import Callable, Coroutine, MutableMapping
from pathlib import Path
from typing import Any

import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pressured.cli import main as cli_main
from pressured.config import Settings
from pressured.controller import Controller
from pressured.events import EventSource, PressureEvent

# tmp_path is reused across examples on purpose: each example overwrites its one file.
FIXTURE_OK = HealthCheck.function_scoped_fixture
RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]

SECTIONS = [
    "daemon",
    "scopes",
    "guard",
    "kill",
    "reaper",
    "metrics",
    "journal",
    "hooks",
    "watchdog",
    "bogus",
]
KEYS = [
    "loop",
    "dry_run",
    "port",
    "cgroup",
    "levels",
    "threshold_ms",
    "window_ms",
    "name",
    "policies",
    "options",
    "cpus",
    "protect_cmdline",
    "grace_ms",
    "x",
]

scalars = st.one_of(
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(string.printable, max_size=12),
)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    text = text.replace("\r", "\\r").replace("\t", "\\t").replace("\x0b", " ").replace("\x0c", " ")
    return f'"{text}"'


values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    ),
    max_leaves=8,
)
documents = st.dictionaries(
    st.sampled_from(SECTIONS),
    st.dictionaries(st.sampled_from(KEYS), values, max_size=4),
    max_size=4,
)


def run_check(path: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["check", "--no-policies", "-c", str(path)])
    return code, err.getvalue()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=documents)
def test_generated_configuration_ends_in_exit_0_or_a_field_error(
    tmp_path: Path, document: dict[str, dict[str, object]]
) -> None:
    """Any generated file: exit 0, or exit 2 with 'invalid configuration: ...: <field>: why'."""
    path = tmp_path / "c.toml"
    lines = []
    for section, table in document.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    code, stderr = run_check(path)
    assert code in (0, 2)
    if code == 2:
        # One problem on one line; several as a count, then one indented "field: why" each.
        first, *rest = stderr.splitlines()
        if first.startswith("pressured: invalid configuration: "):
            assert not rest
        else:
            assert re.fullmatch(r"pressured: invalid configuration in .+: \d+ problems", first)
            assert rest and all(re.fullmatch(r"  \S+: .+", line) for line in rest), rest
        assert "Traceback" not in stderr


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=300))
def test_binary_garbage_file_is_a_clear_error(tmp_path: Path, data: bytes) -> None:
    """Arbitrary bytes as a configuration file: exit 0 or 2, never a traceback."""
    path = tmp_path / "g.toml"
    path.write_bytes(data)
    path.chmod(0o600)
    code, stderr = run_check(path)
    assert code in (0, 2)
    assert "Traceback" not in stderr


FAKE = 4_190_001


def fake_process(
    root: Path,
    pid: int,
    *,
    stat: str | None = None,
    cmdline: bytes = b"app\0",
    status: str | None = None,
) -> None:
    base = root / str(pid)
    base.mkdir()
    fields = ["S", "1"] + ["0"] * 4 + ["0"] + ["0"] * 12 + ["500"] + ["0", "2560"] + ["0"] * 20
    (base / "stat").write_text(stat if stat is not None else f"{pid} (app) " + " ".join(fields))
    (base / "status").write_text(status if status is not None else "Uid:\t1000\t1000\n")
    (base / "cmdline").write_bytes(cmdline)
    (base / "oom_score").write_text("700\n")
    (base / "oom_score_adj").write_text("0\n")
    (base / "cgroup").write_text("0::/fake\n")


def test_malformed_proc_entries_are_skipped_with_one_log_line_each(
    run_async: RunAsync, tmp_path: Path
) -> None:
    """A fake /proc with two broken entries: two 'scan.problem' lines, a decision on the rest."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "self").symlink_to(f"/proc/{os.getpid()}")
    for name in ("meminfo", "vmstat", "pressure"):
        (proc / name).symlink_to(f"/proc/{name}")
    # PIDs far above any live process: the actuator's pidfd_open finds nobody, so nothing
    # real is ever touched by this fake tree.
    fake_process(proc, FAKE, cmdline=b"\x1b[31m" + b"A" * 100_000 + b"\0\xff\xfe\0")
    fake_process(proc, FAKE + 1, stat=f"{FAKE + 1} (broken")
    fake_process(proc, FAKE + 2, status="Name: no uid line\n")
    settings_ = Settings.model_validate(
        {
            "daemon": {"mlockall": False, "dry_run": True, "proc_root": str(proc)},
            "watchdog": {"enabled": False},
        }
    )

    async def go() -> tuple[list[MutableMapping[str, Any]], Any]:
        with structlog.testing.capture_logs() as logs:
            async with Controller(settings_) as controller:
                record = await controller.scopes[0].handle(
                    PressureEvent(scope="system", level="some", source=EventSource.MANUAL)
                )
        return logs, record

    logs, record = run_async(go())
    problems = [entry for entry in logs if entry["event"] == "scan.problem"]
    assert sorted(entry["pid"] for entry in problems) == [FAKE + 1, FAKE + 2]
    (decided,) = [e for e in logs if e["event"] == "policy.decided"]
    assert decided["victim"] == f"pid {FAKE}"
    assert record is not None and record.pid == FAKE
    assert str(record.result) == "vanished"
    assert "\x1b" not in record.target
