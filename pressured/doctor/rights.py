"""Rights: killing other users' processes, and the capabilities each feature needs."""

from __future__ import annotations

import os

from pressured.doctor.result import CheckResult, Status
from pressured.kernel import caps


def check_kill_rights(proc_root: str = "/proc") -> CheckResult:
    """Killing other users' processes needs root's CAP_KILL: essential for a daemon."""
    euid = os.geteuid()
    has_kill = caps.has_capability(caps.CAP_KILL, proc_root)
    facts = {"euid": euid, "CAP_KILL": has_kill}
    if has_kill:
        who = "root" if euid == 0 else f"uid {euid}"
        return CheckResult(
            "kill_rights", Status.OK, f"{who} with CAP_KILL", essential=True, facts=facts
        )
    return CheckResult(
        "kill_rights",
        Status.FAIL,
        f"uid {euid} without CAP_KILL: only processes of the same user can be killed",
        "Run pressured as root, or grant it CAP_KILL (AmbientCapabilities=CAP_KILL).",
        essential=True,
        facts=facts,
    )


_CAP_PURPOSE = {
    "CAP_KILL": "kill any process",
    "CAP_SYS_RESOURCE": "sub-2 s trigger windows",
    "CAP_SYS_NICE": "raise a dying victim's priority, real-time reaper",
    "CAP_IPC_LOCK": "mlockall beyond RLIMIT_MEMLOCK",
}


def check_capabilities(proc_root: str = "/proc") -> CheckResult:
    """Each capability buys one thing (see ``_CAP_PURPOSE``); name the ones missing."""
    held = caps.named_capabilities(proc_root)
    wanted = {name: held.get(name, False) for name in _CAP_PURPOSE}
    listing = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in wanted.items())
    missing = [name for name, ok in wanted.items() if not ok]
    if not missing:
        return CheckResult("capabilities", Status.OK, listing, facts=wanted)
    why = "; ".join(f"{name}: {_CAP_PURPOSE[name]}" for name in missing)
    return CheckResult(
        "capabilities",
        Status.WARN,
        f"{listing} (missing {why})",
        f"Grant {', '.join(missing)} (AmbientCapabilities= in the unit, or securityContext "
        "capabilities in Kubernetes) if those features matter here.",
        facts=wanted,
    )
