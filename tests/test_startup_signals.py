"""SIGTERM while ``pressured run`` starts (a ``systemctl stop`` or a pod deletion during
start-up), as a real process: start-up unwinds, the log says why it stopped, and the status is
the 0 of a requested stop, as it is once the daemon runs. The old code left SIGTERM at its
default disposition until the controller was ready: the process died on the spot (status -15)
with no line saying why."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pressured.cli import startsignals
from pressured.testing.daemon import Daemon, scope_config, write_config
from pressured.testing.scratch import ScratchGroup
from tests.test_startup import (
    daemon_in_a_plugin_import,
    plugin_config,
    signalled_while_reading_the_configuration,
    wait_for_file,
)

EXIT_STOPPED = 0


def _assert_stopped_by_sigterm(daemon: Daemon, code: int) -> None:
    """Exit 0 without a traceback, and a log line naming SIGTERM as the reason: the start-up
    interruption before controller.ready, the graceful stop's signal.received after it."""
    stderr = daemon.stderr_text()
    assert code == EXIT_STOPPED, (code, daemon.raw[-5:], stderr)
    assert "Traceback" not in stderr, stderr
    assert all("Traceback" not in raw for raw in daemon.raw), daemon.raw
    said = "signal.received" if daemon.events("controller.ready") else "daemon.interrupted"
    assert [line.get("signal") for line in daemon.events(said)] == ["SIGTERM"], daemon.raw


@pytest.mark.kernel
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("delay_s", [0.0, 0.02, 0.04, 0.06, 0.1, 0.15, 0.3])
def test_sigterm_at_any_moment_of_start_up_stops_cleanly_with_status_0(
    scratch: ScratchGroup, tmp_path: Path, delay_s: float, loop: str
) -> None:
    """SIGTERM at fixed delays after the first log line (importing the daemon, arming,
    starting HTTP, or just ready), on both loops: status 0 and a line saying SIGTERM stopped
    it, and the process always ends (no thread or armed trigger keeps it alive)."""
    config = write_config(tmp_path / "p.toml", scope_config(scratch.path, scratch.memcg_path))
    with Daemon(config, "--loop", loop) as daemon:
        daemon.wait_for("daemon.starting", 30)
        time.sleep(delay_s)
        daemon.signal(signal.SIGTERM)
        code = daemon._running().wait(15)
    _assert_stopped_by_sigterm(daemon, code)


@pytest.mark.kernel
def test_sigterm_while_a_policy_plugin_loads_stops_at_once_with_status_0(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """SIGTERM during a start-up step that never awaits (a plugin's 60 s import) ends start-up
    at once, before any trigger is armed."""
    with daemon_in_a_plugin_import(scratch, tmp_path) as daemon:
        daemon.signal(signal.SIGTERM)
        code = daemon._running().wait(10)  # well before the plugin's 60 s sleep ends
    _assert_stopped_by_sigterm(daemon, code)
    assert not daemon.events("trigger.armed")


@pytest.mark.kernel
def test_sigterm_while_reading_the_configuration_stops_with_status_0(tmp_path: Path) -> None:
    """SIGTERM while the configuration file is still being read (a FIFO nobody writes):
    status 0, no traceback. Logging is not configured yet, so no JSON line is expected."""
    daemon, code = signalled_while_reading_the_configuration(tmp_path, signal.SIGTERM)
    stderr = daemon.stderr_text()
    assert code == EXIT_STOPPED, (code, daemon.raw, stderr)
    assert "Traceback" not in stderr, stderr
    assert any("daemon.interrupted" in raw and "SIGTERM" in raw for raw in daemon.raw), daemon.raw


SLOW_DAEMON_IMPORT = """\
import importlib.abc
import os
import sys
import time


class SlowRunModule(importlib.abc.MetaPathFinder):
    # Stands for the daemon's imports on a thrashing host, where each module is a disk read.
    def find_spec(self, name, path, target=None):
        if name == "pressured.cli.run":
            open(os.environ["STARTUP_TEST_MARKER"], "w").close()
            time.sleep(60)
        return None


sys.meta_path.insert(0, SlowRunModule())
from pressured.cli import main

sys.exit(main(["run", "--dry-run"]))
"""


def test_sigterm_while_the_daemon_modules_import_stops_with_status_0(tmp_path: Path) -> None:
    """SIGTERM while `pressured run` still imports its own modules (before the run command's
    code exists): status 0, no traceback, at once."""
    marker = tmp_path / "importing"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_DAEMON_IMPORT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "STARTUP_TEST_MARKER": str(marker)},
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "never reached the daemon's imports"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)  # well before the 60 s import ends
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == EXIT_STOPPED, (proc.returncode, stderr)
    assert b"Traceback" not in stderr, stderr


def test_a_stop_signal_python_wrapped_while_creating_a_class_is_still_a_stop() -> None:
    """CPython 3.11 re-raises what ``__set_name__`` raises as a RuntimeError from it: a
    SIGTERM landing while a dataclass is created during the daemon's imports must still read
    as a stop (it ended in a traceback and exit 1, found by repeating SIGTERM 20 ms after
    ``daemon.starting``: 1 run in 148)."""

    class Interrupted:
        def __set_name__(self, owner: type, name: str) -> None:
            raise startsignals.StopRequested

    try:
        type("Model", (), {"field": Interrupted()})
    except BaseException as exc:
        caught = exc
    interrupt = startsignals.interruption(caught)
    assert isinstance(interrupt, startsignals.StopRequested), repr(caught)
    assert startsignals.exit_status(interrupt) == EXIT_STOPPED
    assert startsignals.interruption(RuntimeError("a real failure")) is None


# `pressured run`, where SIGTERM lands inside a weakref callback the moment the module named by
# $STARTUP_TEST_MODULE starts importing. importlib runs such a callback itself after every
# import (to drop the module's lock): CPython prints what a callback raises as "Exception
# ignored" and carries on, so the start-up handler's StopRequested was lost and the daemon ran
# on for good (1 SIGTERM in 100 landing in a run of imports is lost there).
SIGTERM_IN_A_FINALIZER = """\
import importlib.abc
import os
import signal
import sys
import weakref


def sigterm(_ref):
    try:
        signal.raise_signal(signal.SIGTERM)  # the Python handler runs before this returns
    except BaseException:
        open(os.environ["STARTUP_TEST_MARKER"], "w").close()  # it raised in the callback
        raise


class SigtermInAFinalizer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == os.environ["STARTUP_TEST_MODULE"]:
            sys.meta_path.remove(self)
            finalized = type("Finalized", (), {})()
            ref = weakref.ref(finalized, sigterm)
            del finalized
        return None


sys.meta_path.insert(0, SigtermInAFinalizer())
from pressured.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _sigterm_in_a_finalizer(
    scratch: ScratchGroup, tmp_path: Path, module: str, loop: str
) -> tuple[Daemon, int]:
    """A daemon whose SIGTERM is raised inside a weakref callback when ``module`` is first
    imported; the daemon and its exit status (or a failure if it never ends)."""
    marker = tmp_path / "raised-in-a-callback"
    config = write_config(tmp_path / "p.toml", scope_config(scratch.path, scratch.memcg_path))
    env = {"STARTUP_TEST_MODULE": module, "STARTUP_TEST_MARKER": str(marker)}
    daemon = Daemon(config, "--loop", loop, env=env)
    daemon.argv = [sys.executable, "-c", SIGTERM_IN_A_FINALIZER, *daemon.argv[3:]]
    with daemon:
        try:
            code = daemon._running().wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the lost SIGTERM left the daemon running; log: {daemon.raw[-5:]}")
    assert marker.exists(), "the SIGTERM did not land in the weakref callback"
    return daemon, code


@pytest.mark.kernel
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_sigterm_lost_in_a_finalizer_while_the_daemon_imports_still_stops_start_up(
    scratch: ScratchGroup, tmp_path: Path, loop: str
) -> None:
    """A SIGTERM swallowed by CPython in a weakref callback during the daemon's imports stops
    start-up at the next checkpoint, before anything is armed: status 0, no traceback."""
    daemon, code = _sigterm_in_a_finalizer(scratch, tmp_path, "pressured.daemon", loop)
    _assert_stopped_by_sigterm(daemon, code)
    assert not daemon.events("trigger.armed")


@pytest.mark.kernel
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_sigterm_lost_in_a_finalizer_while_policies_load_stops_once_armed(
    scratch: ScratchGroup, tmp_path: Path, loop: str
) -> None:
    """A SIGTERM swallowed later (policy loading, inside the controller's start) is handed to
    the controller's own handlers once they exist: a graceful stop, status 0."""
    daemon, code = _sigterm_in_a_finalizer(scratch, tmp_path, "pressured.policies.oom_score", loop)
    _assert_stopped_by_sigterm(daemon, code)
    assert [line["signal"] for line in daemon.events("signal.deferred")] == ["SIGTERM"]


SIGTERM_IN_A_PLUGIN_CLASS = """\
import signal

from pressured.policies.base import BasePolicy


class Described:
    # SIGTERM lands while Python creates the plugin's class (as it may while any dataclass or
    # pydantic model of a plugin is created): CPython 3.11 wraps what __set_name__ raises in
    # a RuntimeError, which the plugin loader reports as a failed import.
    def __set_name__(self, owner, name):
        signal.raise_signal(signal.SIGTERM)


class Plugin(BasePolicy):
    name = "interrupted"
    described = Described()
"""


@pytest.mark.kernel
def test_sigterm_wrapped_into_a_plugin_load_error_is_a_stop_not_a_config_error(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """A SIGTERM that the plugin loader turned into "importing the plugin failed" (exit 2, an
    invalid configuration a supervisor would not restart on) is still a requested stop."""
    config = plugin_config(scratch, tmp_path, SIGTERM_IN_A_PLUGIN_CLASS, "Plugin")
    with Daemon(config) as daemon:
        code = daemon._running().wait(20)
    _assert_stopped_by_sigterm(daemon, code)
    assert not daemon.events("trigger.armed")


HELD_POLICY = """\
import os
import time
from pathlib import Path

from pressured.policies.base import BasePolicy

# Tells the test that start-up has reached policy loading, then stays until released.
Path(os.environ["STARTUP_TEST_MARKER"]).touch()
release = Path(os.environ["STARTUP_TEST_RELEASE"])
for _ in range(6000):
    if release.exists():
        break
    time.sleep(0.01)


class HeldPolicy(BasePolicy):
    name = "held"
"""


@pytest.mark.kernel
def test_sighup_during_start_up_reloads_once_running_instead_of_killing(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """SIGHUP (``systemctl reload``) while start-up loads a policy: its default action killed
    the daemon; now start-up goes on and the configuration is re-read once running (the file
    may have changed after start-up read it)."""
    config = plugin_config(scratch, tmp_path, HELD_POLICY, "HeldPolicy")
    marker, release = tmp_path / "loading", tmp_path / "release"
    env = {"STARTUP_TEST_MARKER": str(marker), "STARTUP_TEST_RELEASE": str(release)}
    with Daemon(config, env=env) as daemon:
        wait_for_file(daemon, marker, "the plugin")
        daemon.signal(signal.SIGHUP)
        release.touch()
        daemon.wait_for("config.reloaded", 30)
        code = daemon.stop()
    assert code == EXIT_STOPPED, (code, daemon.raw[-5:], daemon.stderr_text())
    assert [line["signal"] for line in daemon.events("signal.deferred")] == ["SIGHUP"]
    assert [line["signal"] for line in daemon.events("signal.received")] == ["SIGHUP", "SIGTERM"]
