"""Reading the configuration on reload: through aiofiles on the owned I/O thread only, with the
same unsafe-file check and error words as the start-up read."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pressured.config import read_toml
from pressured.errors import ConfigError, UnsafeFileError
from pressured.ops.configfile import read_config_file

Runner = Callable[[Coroutine[Any, Any, Any]], Any]

CONFIG = '[daemon]\ndry_run = true\n\n[[scopes]]\ncgroup = "/jobs"\n'


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_reads_what_read_toml_reads_on_the_owned_thread_only(
    run_async: Runner, tmp_path: Path
) -> None:
    """The document equals the start-up read, and no thread but "pressured-ops" is created."""
    path = write(tmp_path / "p.toml", CONFIG)
    before = {thread.ident for thread in threading.enumerate()}
    with ThreadPoolExecutor(1, thread_name_prefix="pressured-ops") as io:

        async def scenario() -> tuple[dict[str, Any], list[str]]:
            document = await read_config_file(path, io)
            return document, [t.name for t in threading.enumerate() if t.ident not in before]

        document, new_threads = run_async(scenario())
    assert document == read_toml(path)
    assert new_threads == ["pressured-ops_0"]


def test_config_in_a_directory_others_can_write_is_refused_on_reload(
    run_async: Runner, tmp_path: Path
) -> None:
    """A reload applies the same unsafe-file check as start-up."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    path = write(shared / "p.toml", CONFIG)
    with (
        ThreadPoolExecutor(1) as io,
        pytest.raises(UnsafeFileError, match=f"{shared} is writable by group or others"),
    ):
        run_async(read_config_file(path, io))


@pytest.mark.parametrize(
    ("text", "problem"),
    [("[daemon\n", "not valid TOML"), (b"\xff\xfe", r"not UTF-8 text \(byte 0\)")],
)
def test_bad_file_is_a_config_error(
    run_async: Runner, tmp_path: Path, text: str | bytes, problem: str
) -> None:
    """Invalid TOML or bytes are ConfigErrors on field <file>, as at start-up."""
    path = tmp_path / "p.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(0o600)
    with ThreadPoolExecutor(1) as io, pytest.raises(ConfigError, match=problem) as caught:
        run_async(read_config_file(path, io))
    assert caught.value.field == "<file>"


def test_missing_file_is_a_config_error(run_async: Runner, tmp_path: Path) -> None:
    """A configuration that disappeared is 'no such file', not a traceback."""
    with ThreadPoolExecutor(1) as io, pytest.raises(ConfigError, match="no such file"):
        run_async(read_config_file(tmp_path / "gone.toml", io))


def test_daemon_reload_reads_its_file_on_the_daemons_own_io_thread(
    run_async: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP's source, as `pressured run` wires it: the file is checked and read on the
    daemon's "pressured-ops" thread, never on the loop, and the new settings come back."""
    import argparse

    from pressured.cli.common import settings_from_args_async
    from pressured.daemon import Daemon
    from pressured.ops import configfile

    path = write(tmp_path / "p.toml", "[daemon]\ndry_run = true\n\n[metrics]\nenabled = false\n")
    args = argparse.Namespace(config=str(path), cgroup=None, dry_run=None, loop=None)
    settings = run_async(settings_from_args_async(args, ThreadPoolExecutor(1)))
    checked_on: list[str] = []
    real_checked = configfile._checked

    def spy(name: str) -> str:
        checked_on.append(threading.current_thread().name)
        return real_checked(name)

    monkeypatch.setattr(configfile, "_checked", spy)
    daemon = Daemon(settings, reload=lambda io: settings_from_args_async(args, io))
    source = daemon.controller._reload_source
    assert source is not None

    async def reload_once() -> Any:
        pending = source()
        assert inspect.isawaitable(pending)  # a coroutine: the read happens off the loop
        return await pending

    new = run_async(reload_once())
    daemon.io.shutdown(wait=True)
    assert new.daemon.dry_run is True
    assert checked_on and all(name.startswith("pressured-ops") for name in checked_on)
