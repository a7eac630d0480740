"""Thin, synchronous, typed access to the kernel interfaces pressured stands on.

No asyncio in here: the controller composes these on its own threads. Every function that
touches a file takes its root (``proc_root``, a :class:`~pressured.kernel.cgroupfs.CgroupLayout`)
so tests can point it at a temporary tree.

* :mod:`~pressured.kernel.psi`: pressure files and trigger fds;
* :mod:`~pressured.kernel.pidfd`: pidfds, signals and ``process_mrelease``;
* :mod:`~pressured.kernel.procfs`: the process scan;
* :mod:`~pressured.kernel.cgroupfs`: cgroup layout, membership, memory, kill and freeze;
* :mod:`~pressured.kernel.caps`: capabilities.
"""
