"""Other OOM killers already running here: earlyoom, nohang, oomd, systemd-oomd.

Two userspace killers watching the same memory race each other: both see the same pressure,
both pick a victim, and the host loses two processes where one would have done (or one daemon
kills the other's helper). Doctor cannot decide for the operator, so it warns and says how to
hand over: stop and disable the other killer, or run ``pressured run --dry-run`` beside it
first and compare what each would have killed.

A killer is found by name in ``/proc``: the process's ``comm``, the basename of its
executable, or, for an interpreter running a script (nohang is Python), the basename of the
script in its command line. Names are chosen by the process itself, so a match is evidence,
not proof; that is enough for a warning. systemd-oomd is also asked for through systemd, when
systemd runs here, because its unit may be enabled (socket-activated) while no process runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pressured.doctor.result import CheckResult, Status

__all__ = ["KNOWN_KILLERS", "FoundKiller", "check_other_killers", "find_other_killers"]

KNOWN_KILLERS: dict[str, str] = {
    "earlyoom": "systemctl disable --now earlyoom",
    "nohang": "systemctl disable --now nohang nohang-desktop",
    "oomd": "systemctl disable --now oomd",
    "systemd-oomd": "systemctl disable --now systemd-oomd.service systemd-oomd.socket "
    "(and 'systemctl mask systemd-oomd' so an upgrade does not bring it back)",
}
"""Each known killer and the command that stops and disables it."""

_INTERPRETERS = ("python", "perl", "sh", "bash")
_SYSTEMCTL_TIMEOUT_S = 2.0

UnitState = Callable[[str], str | None]
"""Asks systemd for a unit's ``ActiveState``; None when systemd cannot be asked."""


@dataclass(frozen=True, slots=True)
class FoundKiller:
    name: str
    """The known killer's name (a key of :data:`KNOWN_KILLERS`)."""
    pid: int | None
    """The process found, or None when only systemd reports the unit active."""
    matched_by: str
    """``comm``, ``exe``, ``cmdline`` or ``systemd``."""


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return None


def _match(pid_dir: str) -> tuple[str, str] | None:
    """(killer name, how it matched) for one ``/proc/PID`` directory, or None."""
    comm = (_read_text(f"{pid_dir}/comm") or "").strip()
    if comm in KNOWN_KILLERS:
        return comm, "comm"
    try:
        exe = os.path.basename(os.readlink(f"{pid_dir}/exe")).removesuffix(" (deleted)")
    except OSError:
        return None  # a kernel thread, or a process that just exited
    if exe in KNOWN_KILLERS:
        return exe, "exe"
    if exe.startswith(_INTERPRETERS):
        argv = (_read_text(f"{pid_dir}/cmdline") or "").split("\0")
        # The first argument that is not an option is the script: python3 -u /usr/sbin/nohang.
        script = next((arg for arg in argv[1:] if arg and not arg.startswith("-")), "")
        if os.path.basename(script) in KNOWN_KILLERS:
            return os.path.basename(script), "cmdline"
    return None


def _processes(proc_root: str) -> Iterator[tuple[int, str]]:
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return
    for entry in entries:
        if entry.isdigit():
            yield int(entry), f"{proc_root}/{entry}"


def systemd_unit_state(unit: str) -> str | None:
    """``systemctl show -p ActiveState --value UNIT``, when systemd is this host's init."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not Path("/run/systemd/system").is_dir():
        return None
    try:
        result = subprocess.run(
            [systemctl, "show", "--property=ActiveState", "--value", unit],
            capture_output=True,
            text=True,
            timeout=_SYSTEMCTL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def find_other_killers(
    proc_root: str = "/proc", unit_state: UnitState = systemd_unit_state
) -> list[FoundKiller]:
    """Every known OOM killer running here, by process, plus systemd-oomd by its unit."""
    own = os.getpid()
    found = [
        FoundKiller(name, pid, how)
        for pid, pid_dir in _processes(proc_root)
        if pid != own and (matched := _match(pid_dir)) is not None
        for name, how in [matched]
    ]
    if not any(killer.name == "systemd-oomd" for killer in found):
        state = unit_state("systemd-oomd.service")
        if state in ("active", "activating", "reloading"):
            found.append(FoundKiller("systemd-oomd", None, "systemd"))
    return sorted(found, key=lambda killer: (killer.name, killer.pid or 0))


def check_other_killers(
    proc_root: str = "/proc", unit_state: UnitState = systemd_unit_state
) -> CheckResult:
    """Warn when another userspace OOM killer runs here, and say how to hand over."""
    found = find_other_killers(proc_root, unit_state)
    facts: dict[str, object] = {
        "found": [
            {"name": killer.name, "pid": killer.pid, "matched_by": killer.matched_by}
            for killer in found
        ]
    }
    if not found:
        return CheckResult(
            "other_killers",
            Status.OK,
            f"no other OOM killer running ({', '.join(KNOWN_KILLERS)} looked for)",
            facts=facts,
        )
    names = sorted({killer.name for killer in found})
    listing = ", ".join(
        f"{killer.name} (pid {killer.pid})" if killer.pid else f"{killer.name} (unit active)"
        for killer in found
    )
    stops = "; ".join(KNOWN_KILLERS[name] for name in names)
    return CheckResult(
        "other_killers",
        Status.WARN,
        f"another OOM killer runs here: {listing}; two killers racing on the same pressure "
        "can kill twice for one shortage",
        f"Hand over: stop and disable it ({stops}), or keep it for now and run "
        "'pressured run --dry-run' beside it to compare decisions before switching.",
        facts=facts,
    )
