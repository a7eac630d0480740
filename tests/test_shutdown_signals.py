"""Signals while ``pressured run`` is already stopping, as a real process held in its shutdown
recipe (a policy whose ``aclose`` waits for the test).

The old code removed its signal handlers when the root task group ended, at step 2 of the
recipe, and asyncio and uvloop put back the *default* action: a second SIGTERM while policies
closed, in-flight kills finished or HTTP closed killed the process on the spot (status -15,
143 to systemd, no log line), turning a clean stop into a failed one, and a second Ctrl-C
raised a KeyboardInterrupt into the middle of the recipe.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from pressured.testing.daemon import Daemon, LogLine
from pressured.testing.scratch import ScratchGroup
from tests.test_startup import plugin_config, wait_for_file

EXIT_FORCED = 130

SLOW_CLOSE_POLICY = """\
import asyncio
import os
from pathlib import Path

from pressured.policies.base import BasePolicy, Decision


class SlowClose(BasePolicy):
    # Holds the shutdown recipe at step 3 (close policies) until the test releases it.
    name = "slow_close"

    async def __call__(self, snapshot):
        return Decision.no_action("a test policy that never kills")

    async def aclose(self):
        Path(os.environ["SHUTDOWN_TEST_CLOSING"]).touch()
        release = Path(os.environ["SHUTDOWN_TEST_RELEASE"])
        for _ in range(6000):  # at most 60 s, should the test never release it
            if release.exists():
                return
            await asyncio.sleep(0.01)
"""


@contextlib.contextmanager
def daemon_held_in_shutdown(
    scratch: ScratchGroup, tmp_path: Path, loop: str, first: signal.Signals
) -> Iterator[tuple[Daemon, Path]]:
    """A running daemon sent ``first``, yielded once its shutdown is held closing a policy,
    with the file that releases it; killed on the way out if still running."""
    config = plugin_config(scratch, tmp_path, SLOW_CLOSE_POLICY, "SlowClose")
    closing, release = tmp_path / "closing", tmp_path / "release"
    env = {"SHUTDOWN_TEST_CLOSING": str(closing), "SHUTDOWN_TEST_RELEASE": str(release)}
    with Daemon(config, "--loop", loop, env=env) as daemon:
        daemon.wait_for("ops.listening", 30)
        daemon.signal(first)
        wait_for_file(daemon, closing, "the policy's close in its shutdown")
        yield daemon, release


def _already_stopping(line: LogLine) -> bool:
    return line.get("detail") == "already stopping"


@pytest.mark.kernel
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_second_sigterm_during_shutdown_is_logged_and_the_stop_stays_clean(
    scratch: ScratchGroup, tmp_path: Path, loop: str
) -> None:
    """A second SIGTERM while the recipe runs is logged and ignored: the recipe finishes and
    the status is the 0 of a clean stop, not a death by SIGTERM."""
    with daemon_held_in_shutdown(scratch, tmp_path, loop, signal.SIGTERM) as (daemon, release):
        mark = daemon.mark()
        daemon.signal(signal.SIGTERM)
        second = daemon.wait_for("signal.received", 10, _already_stopping, after=mark)
        release.touch()
        code = daemon._running().wait(15)
    assert code == 0, (code, daemon.raw[-5:], daemon.stderr_text())
    assert second["signal"] == "SIGTERM"
    assert daemon.events("controller.stopped"), daemon.raw[-5:]
    assert "Traceback" not in daemon.stderr_text()


@pytest.mark.kernel
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_second_ctrl_c_during_shutdown_forces_the_exit_at_once(
    scratch: ScratchGroup, tmp_path: Path, loop: str
) -> None:
    """Ctrl-C pressed again while the recipe runs forces the exit (130) without waiting for
    the recipe, said in the log, not raised into the recipe's middle as a KeyboardInterrupt."""
    with daemon_held_in_shutdown(scratch, tmp_path, loop, signal.SIGINT) as (daemon, _release):
        daemon.signal(signal.SIGINT)
        code = daemon._running().wait(15)  # the policy's close is never released
    assert code == EXIT_FORCED, (code, daemon.raw[-5:], daemon.stderr_text())
    assert [line["detail"] for line in daemon.events("controller.forced_exit")] == ["second SIGINT"]
    assert not daemon.events("controller.stopped")
    assert "Traceback" not in daemon.stderr_text()


@pytest.mark.kernel
def test_ctrl_c_after_sigterm_during_shutdown_does_not_force(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """Only a *second* SIGINT forces: one Ctrl-C while a SIGTERM's stop runs is logged and the
    stop stays clean (status 0)."""
    with daemon_held_in_shutdown(scratch, tmp_path, "uvloop", signal.SIGTERM) as (daemon, release):
        mark = daemon.mark()
        daemon.signal(signal.SIGINT)
        line = daemon.wait_for("signal.received", 10, _already_stopping, after=mark)
        release.touch()
        code = daemon._running().wait(15)
    assert line["signal"] == "SIGINT"
    assert code == 0, (code, daemon.raw[-5:], daemon.stderr_text())
    assert daemon.events("controller.stopped")


@pytest.mark.kernel
def test_a_policy_whose_close_hangs_does_not_hold_the_stop(
    scratch: ScratchGroup, tmp_path: Path
) -> None:
    """A plugin's ``aclose`` that never returns is left behind after its time limit, said in
    the log, and the stop stays clean (status 0). The old recipe waited on it without limit:
    with a second SIGTERM ignored while stopping, only the supervisor's SIGKILL ended it."""
    with daemon_held_in_shutdown(scratch, tmp_path, "uvloop", signal.SIGTERM) as (daemon, _):
        code = daemon._running().wait(15)  # the policy's close is never released
    assert code == 0, (code, daemon.raw[-5:], daemon.stderr_text())
    failed = daemon.events("policy.close_failed")
    assert [line["policy"].rsplit(":", 1)[-1] for line in failed] == ["SlowClose"], failed
    assert "did not close within" in failed[0]["error"]
    assert daemon.events("controller.stopped")
