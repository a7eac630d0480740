"""Linux capabilities of this process, read from ``/proc/self/status``."""

from __future__ import annotations

from pathlib import Path

CAP_KILL = 5
CAP_SYS_PTRACE = 19
CAP_SYS_NICE = 23
CAP_SYS_RESOURCE = 24
CAP_IPC_LOCK = 14

NAMES = {
    CAP_KILL: "CAP_KILL",
    CAP_IPC_LOCK: "CAP_IPC_LOCK",
    CAP_SYS_PTRACE: "CAP_SYS_PTRACE",
    CAP_SYS_NICE: "CAP_SYS_NICE",
    CAP_SYS_RESOURCE: "CAP_SYS_RESOURCE",
}


def effective_mask(proc_root: str = "/proc") -> int:
    """The effective capability mask of this process (0 if it cannot be read)."""
    status = Path(proc_root) / "self" / "status"
    with open(status, encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has_capability(cap: int, proc_root: str = "/proc") -> bool:
    """Whether this process has capability number ``cap`` in its *effective* set."""
    return bool(effective_mask(proc_root) >> cap & 1)


def named_capabilities(proc_root: str = "/proc") -> dict[str, bool]:
    """The capabilities pressured cares about, by name."""
    mask = effective_mask(proc_root)
    return {name: bool(mask >> cap & 1) for cap, name in sorted(NAMES.items())}
