"""What this host supports and what pressured will do here: the checks behind ``pressured doctor``.

Every check *does* the thing it reports on instead of guessing from version numbers: it arms a
PSI trigger, opens a pidfd, kills and reaps a throw-away child with ``process_mrelease``, tries
``mlockall`` in a short-lived child. Each returns a frozen :class:`CheckResult`; rendering is the
CLI's job (:mod:`pressured.cli.doctor`). The whole run takes a few hundred milliseconds: the two
child processes are started first and collected last so their start-up overlaps the rest.

Nothing here touches any process but the children it starts itself, and every file descriptor,
child and probe cgroup it creates is closed, reaped or removed before the function returns.

One module per family of checks, and a runner that puts them in order:

- :mod:`~pressured.doctor.kernel`: the kernel version, pidfds, ``process_mrelease``;
- :mod:`~pressured.doctor.pressure`: the PSI files and the trigger windows we may use;
- :mod:`~pressured.doctor.cgroups`: layout, memory controller, ``cgroup.kill``;
- :mod:`~pressured.doctor.memory`: swap and ``mlockall``;
- :mod:`~pressured.doctor.rights`: the right to kill, capabilities;
- :mod:`~pressured.doctor.coexistence`: other OOM killers already running here;
- :mod:`~pressured.doctor.runner`: :func:`run_doctor` and :class:`DoctorReport`.
"""

from __future__ import annotations

from pressured.doctor.cgroups import (
    check_cgroup_controllers,
    check_cgroup_kill,
    check_cgroup_layout,
)
from pressured.doctor.coexistence import check_other_killers, find_other_killers
from pressured.doctor.kernel import (
    MIN_KERNEL_FOR_CGROUP_KILL,
    MIN_KERNEL_FOR_MRELEASE,
    MRELEASE_PROBE_MIB,
    check_kernel,
    check_mrelease,
    check_pidfd,
    kernel_version,
    start_mrelease_probe,
)
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
from pressured.doctor.probes import PROBE_TIMEOUT_S
from pressured.doctor.result import CheckResult, Status
from pressured.doctor.rights import check_capabilities, check_kill_rights
from pressured.doctor.runner import DoctorReport, run_doctor

__all__ = [
    "MIN_KERNEL_FOR_CGROUP_KILL",
    "MIN_KERNEL_FOR_MRELEASE",
    "MRELEASE_PROBE_MIB",
    "PROBE_TIMEOUT_S",
    "CheckResult",
    "DoctorReport",
    "Status",
    "TriggerProbe",
    "TriggerWindows",
    "check_capabilities",
    "check_cgroup_controllers",
    "check_cgroup_kill",
    "check_cgroup_layout",
    "check_kernel",
    "check_kill_rights",
    "check_mlockall",
    "check_mrelease",
    "check_other_killers",
    "check_pidfd",
    "check_psi_cgroup",
    "check_psi_system",
    "check_psi_triggers",
    "check_swap",
    "check_trigger_readers",
    "find_other_killers",
    "kernel_version",
    "probe_trigger_windows",
    "run_doctor",
    "start_mlock_probe",
    "start_mrelease_probe",
]
