"""An example of a policy of your own, loaded by import string: ``custom_policy:OldestHog``.

Kill the *oldest* process above ``min_mib`` (RSS + swap): on a build host the long-running
leak is more likely the culprit than the compiler that just started. See
``custom_policy.toml`` for how the module is found.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from pressured.policies import BasePolicy, Decision, PolicyOptions, Victim
from pressured.snapshot import Snapshot


class OldestHogOptions(PolicyOptions):
    min_mib: float = Field(default=256, ge=0, description="Only processes at least this big.")


class OldestHog(BasePolicy[OldestHogOptions]):
    """Kill the oldest process holding at least ``min_mib`` of memory."""

    name: ClassVar[str] = "oldest_hog"
    Options = OldestHogOptions

    async def __call__(self, snapshot: Snapshot) -> Decision:
        floor = self.options.min_mib * 2**20
        hogs = [
            p for p in snapshot.candidates if p.memory_bytes >= floor and p.oom_score_adj > -1000
        ]
        if not hogs:
            return Decision.no_action(f"no process of {self.options.min_mib:g} MiB or more")
        oldest = min(hogs, key=lambda p: (p.start_time, -p.memory_bytes))
        return Decision.kill(
            Victim.process(
                oldest,
                f"oldest process over {self.options.min_mib:g} MiB ({oldest.comm})",
                start_time=oldest.start_time,
                rss_bytes=oldest.rss_bytes,
            )
        )
