"""The whole run: every check in order, each guarded, into one :class:`DoctorReport`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pressured.doctor.cgroups import (
    check_cgroup_controllers,
    check_cgroup_kill,
    check_cgroup_layout,
    layout_or_none,
)
from pressured.doctor.coexistence import check_other_killers
from pressured.doctor.kernel import check_kernel, check_mrelease, check_pidfd, start_mrelease_probe
from pressured.doctor.memory import check_mlockall, check_swap, start_mlock_probe
from pressured.doctor.pressure import (
    TriggerProbe,
    TriggerWindows,
    check_psi_cgroup,
    check_psi_system,
    check_psi_triggers,
    check_trigger_readers,
    probe_trigger_windows,
)
from pressured.doctor.probes import finish_child
from pressured.doctor.result import CheckResult, Status
from pressured.doctor.rights import check_capabilities, check_kill_rights
from pressured.kernel import psi


@dataclass(frozen=True, slots=True)
class DoctorReport:
    checks: tuple[CheckResult, ...]
    triggers: TriggerWindows | None
    duration_s: float

    @property
    def can_run(self) -> bool:
        """True unless an essential check failed."""
        return not any(c.essential and c.status is Status.FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {str(s): sum(c.status is s for c in self.checks) for s in Status}

    def as_dict(self) -> dict[str, object]:
        return {
            "can_run": self.can_run,
            "checks": [check.as_dict() for check in self.checks],
            "triggers": self.triggers.as_dict() if self.triggers else None,
            "summary": self.counts(),
            "duration_s": round(self.duration_s, 3),
        }


def _guarded(name: str, essential: bool, check: Callable[[], CheckResult]) -> CheckResult:
    """A bug in one check must not hide the others: report it as that check's result."""
    try:
        return check()
    except Exception as exc:  # any bug: turned into a visible failed check below
        return CheckResult(
            name,
            Status.FAIL if essential else Status.WARN,
            f"the check itself failed: {type(exc).__name__}: {exc}",
            "Report this to the pressured authors with the output of 'pressured doctor --json'.",
            essential=essential,
        )


def _probe_triggers_guarded(proc_root: str) -> TriggerProbe:
    try:
        return probe_trigger_windows(proc_root)
    except Exception as exc:  # any bug: reported as a failed psi_triggers check
        path = str(psi.system_pressure_path("memory", proc_root))
        return TriggerProbe(path, None, f"{type(exc).__name__}: {exc}")


def run_doctor(proc_root: str = "/proc") -> DoctorReport:
    """Run every check; the probe children start first so their start-up overlaps the rest."""
    started = time.monotonic()
    mlock_child = start_mlock_probe()
    mrelease_child = start_mrelease_probe()
    try:
        layout = layout_or_none(proc_root)
        trigger_probe = _probe_triggers_guarded(proc_root)
        checks = (
            _guarded("kernel", False, check_kernel),
            _guarded("psi_system", True, lambda: check_psi_system(proc_root)),
            _guarded("psi_cgroup", False, lambda: check_psi_cgroup(layout, proc_root)),
            _guarded("psi_triggers", True, lambda: check_psi_triggers(trigger_probe)),
            _guarded("trigger_readers", False, lambda: check_trigger_readers(trigger_probe)),
            _guarded("pidfd", True, check_pidfd),
            _guarded("process_mrelease", False, lambda: check_mrelease(mrelease_child)),
            _guarded("cgroup_layout", False, lambda: check_cgroup_layout(layout)),
            _guarded(
                "cgroup_controllers", False, lambda: check_cgroup_controllers(layout, proc_root)
            ),
            _guarded("cgroup_kill", False, lambda: check_cgroup_kill(layout, proc_root)),
            _guarded("swap", False, lambda: check_swap(proc_root)),
            _guarded("kill_rights", True, lambda: check_kill_rights(proc_root)),
            _guarded("capabilities", False, lambda: check_capabilities(proc_root)),
            _guarded("mlockall", False, lambda: check_mlockall(mlock_child)),
            _guarded("other_killers", False, lambda: check_other_killers(proc_root)),
        )
    finally:
        for child in (mlock_child, mrelease_child):
            if child is not None:
                finish_child(child)
    return DoctorReport(checks, trigger_probe.windows, time.monotonic() - started)
