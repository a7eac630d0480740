"""PathWaiter: an inotify fd that turns readable when a missing directory may have appeared,
however many levels were missing, with no polling."""

from __future__ import annotations

import os
import select
from pathlib import Path

from pressured.kernel.inotify import PathWaiter


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_waiter_follows_missing_levels_down_to_the_target(tmp_path: Path) -> None:
    """Watching a/b/c with only tmp_path present: each mkdir wakes the fd, and check() is True
    only once c exists; nothing is readable while nothing changes."""
    target = tmp_path / "a" / "b" / "c"
    waiter = PathWaiter(target)
    try:
        assert waiter.check() is False
        assert waiter.watched == tmp_path
        assert not readable(waiter.fileno())
        for made in (tmp_path / "a", tmp_path / "a" / "b"):
            made.mkdir()
            assert readable(waiter.fileno())
            assert waiter.check() is False
            assert waiter.watched == made
            assert not readable(waiter.fileno())
        target.mkdir()
        assert readable(waiter.fileno())
        assert waiter.check() is True
    finally:
        waiter.close()


def test_waiter_climbs_when_its_watched_ancestor_goes(tmp_path: Path) -> None:
    """The watched ancestor itself removed: the waiter watches higher and still sees the
    target come back."""
    (tmp_path / "a").mkdir()
    target = tmp_path / "a" / "b"
    waiter = PathWaiter(target)
    try:
        assert waiter.check() is False
        assert waiter.watched == tmp_path / "a"
        os.rmdir(tmp_path / "a")
        assert readable(waiter.fileno())
        assert waiter.check() is False
        assert waiter.watched == tmp_path
        target.mkdir(parents=True)
        assert readable(waiter.fileno())
        assert waiter.check() is True
    finally:
        waiter.close()


def test_closed_waiter_releases_its_fd(tmp_path: Path) -> None:
    """close() closes the inotify fd, and a second close is harmless."""
    waiter = PathWaiter(tmp_path / "missing")
    fd = waiter.fileno()
    waiter.close()
    waiter.close()
    assert (
        not os.path.exists(f"/proc/self/fd/{fd}")
        or os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify"
    )
