"""Freeze a process with the cgroup v1 freezer: a task frozen there cannot exit after SIGKILL
until thawed (a cgroup v2 ``cgroup.freeze`` lets fatal signals through), which is how tests
make a victim that will not die."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

FREEZER_V1 = Path("/sys/fs/cgroup/freezer")


@contextlib.contextmanager
def frozen_v1(pid: int) -> Iterator[Path]:
    """Freeze ``pid`` in its own v1 freezer group; thaw and remove the group afterwards."""
    if not (FREEZER_V1 / "cgroup.procs").exists():
        pytest.skip("needs the cgroup v1 freezer (a v2-frozen task still dies on SIGKILL)")
    group = FREEZER_V1 / f"pressured-test-{uuid.uuid4().hex[:10]}"
    group.mkdir()
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / "freezer.state").write_text("FROZEN")
        for _ in range(500):
            if (group / "freezer.state").read_text().strip() == "FROZEN":
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the freezer did not reach FROZEN")
        yield group
    finally:
        (group / "freezer.state").write_text("THAWED")
        for _ in range(500):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.02)
