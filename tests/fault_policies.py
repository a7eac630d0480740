"""Misbehaving policies for fault tests, loaded by import string (``tests.fault_policies:X``)."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from pressured.policies.base import BasePolicy, Decision, PolicyOptions
from pressured.snapshot import Snapshot


class SecondsOptions(PolicyOptions):
    seconds: float = 30.0


class BlockTheLoop(BasePolicy[SecondsOptions]):
    """Blocks the event loop thread outright: what a careless plugin doing sync I/O does."""

    name: ClassVar[str] = "block_the_loop"
    Options = SecondsOptions

    async def __call__(self, snapshot: Snapshot) -> Decision:
        time.sleep(self.options.seconds)  # noqa: ASYNC251 - the fault under test
        return Decision.no_action("blocked")


class Hang(BasePolicy[SecondsOptions]):
    """Awaits forever (politely): the chain's time limit must cut it off."""

    name: ClassVar[str] = "hang"
    Options = SecondsOptions

    async def __call__(self, snapshot: Snapshot) -> Decision:
        await asyncio.sleep(self.options.seconds)
        return Decision.no_action("woke up")


class Raise(BasePolicy[SecondsOptions]):
    name: ClassVar[str] = "raise"
    Options = SecondsOptions

    async def __call__(self, snapshot: Snapshot) -> Decision:
        raise RuntimeError("policy bug")


class Garbage(BasePolicy[SecondsOptions]):
    name: ClassVar[str] = "garbage"
    Options = SecondsOptions

    async def __call__(self, snapshot: Snapshot) -> Decision:
        return "kill everything"  # type: ignore[return-value]
