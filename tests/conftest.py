"""Shared fixtures: both event loops, root/kernel feature checks, scratch cgroups."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from pressured.testing.scratch import (
    ScratchGroup,
    evict_from_cache,
    make_thrash_file,
    scratch_unavailable_reason,
)

LOOPS = ["asyncio", "uvloop"]
THRASH_FILE = f"/var/tmp/pressured-test-thrash-{os.getpid()}.bin"
THRASH_FILE_BYTES = 512 << 20


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()


@pytest.fixture(params=LOOPS)
def loop_name(request: pytest.FixtureRequest) -> str:
    """Run the test once on the stdlib loop and once on uvloop."""
    return str(request.param)


RunAsync = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture
def run_async(loop_name: str) -> Iterator[RunAsync]:
    """``run_async(coro)`` runs a coroutine to completion on the parametrized loop."""
    loop = new_loop(loop_name)

    def runner(coro: Coroutine[Any, Any, Any]) -> Any:
        return loop.run_until_complete(coro)

    yield runner
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def kernel_skip_reason() -> str | None:
    return scratch_unavailable_reason()


requires_kernel = pytest.mark.skipif(
    kernel_skip_reason() is not None, reason=f"real-kernel test: {kernel_skip_reason()}"
)


@pytest.fixture
def scratch() -> Iterator[ScratchGroup]:
    """A 64 MiB scratch cgroup, removed with everything in it after the test."""
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(f"real-kernel test: {reason}")
    with ScratchGroup(64 << 20) as group:
        yield group


@pytest.fixture(scope="session")
def _thrash_file_session() -> Iterator[str]:
    path = make_thrash_file(THRASH_FILE, THRASH_FILE_BYTES)
    yield str(path)
    if os.environ.get("PRESSURED_KEEP_THRASH_FILE") != "1":
        path.unlink(missing_ok=True)


@pytest.fixture
def thrash_file(_thrash_file_session: str) -> str:
    """A 512 MiB file for page-cache thrash, made once per session and deleted after; evicted
    from the page cache before each test, since pages an earlier test left cached would be
    found resident and never fault (no stall)."""
    evict_from_cache(_thrash_file_session)
    return _thrash_file_session
