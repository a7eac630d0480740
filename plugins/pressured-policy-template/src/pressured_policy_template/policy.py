"""``kill_by_name``: kill the largest process whose name is on a configured list.

The smallest useful policy, written to be copied. Formula: among user processes in scope
whose name (``comm``, as ``ps -o comm`` shows it, at most 15 characters) is one of ``names``
and whose ``oom_score_adj`` is above -1000, the largest RSS + swap dies; ties go to the younger
process. Nothing on the list running means no action, so the next policy in the chain decides.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from pressured.kernel.procfs import ProcessRecord
from pressured.policies import BasePolicy, Decision, PolicyOptions, Victim
from pressured.snapshot import Snapshot


class KillByNameOptions(PolicyOptions):
    """What a configuration may set under ``options = {...}``. Unknown keys are errors."""

    names: tuple[str, ...] = Field(
        min_length=1, description="Process names (comm) that may be killed, e.g. ['java']."
    )
    min_mib: float = Field(
        default=0.0, ge=0, description="Leave processes smaller than this alone (RSS + swap)."
    )


class KillByNamePolicy(BasePolicy[KillByNameOptions]):
    """Kill the largest process whose name is in ``names``."""

    name: ClassVar[str] = "kill_by_name"
    Options = KillByNameOptions

    def eligible(self, process: ProcessRecord) -> bool:
        return (
            process.comm in self.options.names
            and process.oom_score_adj > -1000
            and process.memory_bytes >= self.options.min_mib * 2**20
        )

    async def __call__(self, snapshot: Snapshot) -> Decision:
        # snapshot.candidates already leaves out PID 1, kernel threads and pressured itself.
        matching = [p for p in snapshot.candidates if self.eligible(p)]
        if not matching:
            return Decision.no_action(f"no process named {', '.join(self.options.names)}")
        # Largest first; among equals the younger (later start_time) goes first.
        matching.sort(key=lambda p: (p.memory_bytes, p.start_time), reverse=True)
        top = matching[0]
        victim = Victim.process(
            top,
            f"{top.comm} is on the kill list and the largest of its kind "
            f"({top.memory_bytes / 2**20:.0f} MiB)",
            rss_bytes=top.rss_bytes,
            swap_bytes=top.swap_bytes,
        )
        # The ranking is evidence for the log line: who else was considered.
        ranking = tuple((f"{p.pid} {p.comm}", p.memory_bytes) for p in matching[:5])
        return Decision.kill(victim, ranking=ranking)
