"""Who may never be killed, decided from what a process cannot forge.

A process chooses its own ``comm`` (``prctl(PR_SET_NAME)``) and command line (it may rewrite
its argv): a thrasher can call itself ``sshd``. It cannot choose

* its **executable**: ``/proc/PID/exe`` names the file it was started from; its device and
  inode (``stat`` of the link, which takes no mmap lock) match a configured binary only if the
  process really runs that file. Configured paths are resolved to (device, inode) once, at
  start-up. A binary replaced by a package upgrade keeps running from the old, deleted inode:
  such a process still matches when its exe link reads ``<configured path> (deleted)`` on the
  configured file's device (only root can unlink files there);
* its **uid** (changing it needs privileges);
* its **cgroup** (moving it needs write access to ``cgroup.procs`` of the target group).

Names and command lines still count, but only together with one of those (``protect`` rules),
or for root-owned processes (the older ``protect_names`` / ``protect_cmdline`` settings).
Every answer is a short reason naming the rule, so a log line can say *why* a process was
left out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import structlog

from pressured.config import GuardSettings, ProtectRule
from pressured.kernel.cgroupfs import CgroupLayout
from pressured.kernel.procfs import ProcessRecord
from pressured.oomd_marks import OmitMarks

log = structlog.get_logger("pressured.protection")

OOM_SCORE_ADJ_NEVER = -1000
DELETED_SUFFIX = " (deleted)"

FileId = tuple[int, int]
"""(st_dev, st_ino) of a file."""
IDENTITY_CACHE_LIMIT = 131_072


def within(path: str | None, roots: Iterable[str]) -> str | None:
    """The first of ``roots`` that is ``path`` or one of its ancestors, or None."""
    if path is None:
        return None
    for root in roots:
        if root in ("/", path) or path.startswith(root.rstrip("/") + "/"):
            return root
    return None


def file_id(path: str) -> FileId | None:
    """(device, inode) of the file at ``path`` (symlinks followed), or None if absent."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def resolve_executables(paths: Iterable[str]) -> dict[FileId, str]:
    """Configured executables by (device, inode); paths missing on this host are skipped."""
    resolved: dict[FileId, str] = {}
    for path in paths:
        identity = file_id(path)
        if identity is not None:
            resolved.setdefault(identity, path)
    return resolved


def exe_identity(record: ProcessRecord, proc_root: str = "/proc") -> FileId | None:
    """The process's executable as (device, inode): from the record where the scanner filled
    it, else a ``stat`` of ``/proc/PID/exe`` (lock-free: no mmap lock is taken)."""
    if record.exe_dev is not None and record.exe_ino is not None:
        return (record.exe_dev, record.exe_ino)
    if record.is_kernel_thread:
        return None
    return file_id(f"{proc_root}/{record.pid}/exe")


def same_process(record: ProcessRecord, proc_root: str = "/proc") -> bool:
    """Whether ``/proc/PID`` is still the process of ``record`` (its start time matches), so a
    fact read there after the scan (like the executable) belongs to it and not to a newcomer
    that reused the PID."""
    try:
        with open(f"{proc_root}/{record.pid}/stat", "rb") as handle:
            data = handle.read(4096)
    except OSError:
        return False
    words = data[data.rfind(b")") + 1 :].split()
    try:
        return int(words[22 - 3]) == record.start_time
    except (IndexError, ValueError):
        return False


def exe_path(pid: int, proc_root: str = "/proc") -> str | None:
    try:
        return os.readlink(f"{proc_root}/{pid}/exe")
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: ProtectRule
    exe: FileId | None
    cmdline: re.Pattern[str] | None
    exe_missing: bool
    """The rule names an executable absent on this host: it can match nothing."""

    def matches(self, record: ProcessRecord, identity: FileId | None) -> bool:
        rule = self.rule
        if self.exe_missing:
            return False
        if rule.uid is not None and record.uid != rule.uid:
            return False
        if rule.cgroup is not None and within(record.cgroup, (rule.cgroup,)) is None:
            return False
        if rule.name is not None and record.comm != rule.name:
            return False
        if self.cmdline is not None and self.cmdline.search(record.cmdline) is None:
            return False
        return self.exe is None or identity == self.exe

    def describe(self) -> str:
        rule = self.rule
        parts = [
            f"{key}={value!r}"
            for key, value in (
                ("name", rule.name),
                ("cmdline", rule.cmdline),
                ("exe", rule.exe),
                ("uid", rule.uid),
                ("cgroup", rule.cgroup),
            )
            if value is not None
        ]
        return "protect rule " + " ".join(parts)


class Protection:
    """The configured protections, resolved once. ``process(record)`` and
    ``cgroup(path, members)`` answer why something may not die, or None."""

    def __init__(
        self,
        settings: GuardSettings,
        *,
        self_pid: int,
        self_cgroup: str | None = None,
        proc_root: str = "/proc",
        layout: CgroupLayout | None = None,
    ) -> None:
        self.settings = settings
        # systemd's ManagedOOMPreference=omit, for the marked group and everything below it.
        self.omit_marks = OmitMarks(layout) if layout is not None else None
        self.self_pid = self_pid
        self.self_cgroup = self_cgroup
        self.proc_root = proc_root
        self.executables: Mapping[FileId, str] = resolve_executables(settings.protect_executables)
        """Configured executables found on this host, by (device, inode)."""
        self._by_path = {path: identity for identity, path in self.executables.items()}
        self._uids = frozenset(settings.protect_uids)
        self._names = frozenset(settings.protect_names)
        self._cmdline = tuple(re.compile(pattern) for pattern in settings.protect_cmdline)
        self._rules = tuple(self._compile(rule) for rule in settings.protect)
        self._identities: dict[tuple[int, int], FileId | None] = {}
        """Executables read by :meth:`process` since the last :meth:`take_identities`."""
        if settings.protect_names or settings.protect_cmdline:
            log.warning(
                "protection.names_root_only",
                names=list(settings.protect_names),
                cmdline=list(settings.protect_cmdline),
                detail="protect_names and protect_cmdline now protect root-owned processes "
                "only: any process can choose its name and command line. Use "
                "protect_executables or protect rules with exe, uid or cgroup instead.",
            )

    @staticmethod
    def _compile(rule: ProtectRule) -> _CompiledRule:
        exe = file_id(rule.exe) if rule.exe is not None else None
        return _CompiledRule(
            rule=rule,
            exe=exe,
            cmdline=re.compile(rule.cmdline) if rule.cmdline is not None else None,
            exe_missing=rule.exe is not None and exe is None,
        )

    def _protected_executable(self, record: ProcessRecord, identity: FileId | None) -> str | None:
        if identity is None:
            return None
        path = self.executables.get(identity)
        if path is not None:
            return path if self._verified(record) else None
        # Upgraded in place: the running process keeps the old inode, now unlinked.
        link = exe_path(record.pid, self.proc_root)
        if link is None or not link.endswith(DELETED_SUFFIX):
            return None
        original = link.removesuffix(DELETED_SUFFIX)
        configured = self._by_path.get(original)
        if configured is not None and configured[0] == identity[0] and self._verified(record):
            return f"{original} (replaced on disk)"
        return None

    def _verified(self, record: ProcessRecord) -> bool:
        # Only a match is worth the extra read: the scanner's own exe figures need none, and
        # a PID reused since the scan must not lend its executable to the old record.
        if record.exe_dev is not None and record.exe_ino is not None:
            return True
        return same_process(record, self.proc_root)

    def process(self, record: ProcessRecord) -> str | None:
        """Why this process must not be killed (the rule, in words), or None."""
        if record.pid == 1:
            return "PID 1"
        if record.pid == self.self_pid:
            return "pressured itself"
        if record.is_kernel_thread:
            return "kernel thread"
        if record.oom_score_adj <= OOM_SCORE_ADJ_NEVER:
            return "oom_score_adj is -1000"
        root = within(record.cgroup, self.settings.protect_cgroups)
        if root is not None:
            return f"in protected cgroup {root}"
        omitted = self._omitted(record.cgroup)
        if omitted is not None:
            return omitted
        if record.uid in self._uids:
            return f"protected uid {record.uid}"
        identity = exe_identity(record, self.proc_root)
        if len(self._identities) >= IDENTITY_CACHE_LIMIT:
            self._identities.clear()
        self._identities[record.identity] = identity
        executable = self._protected_executable(record, identity)
        if executable is not None:
            return f"protected executable {executable}"
        for rule in self._rules:
            if rule.matches(record, identity) and (rule.exe is None or self._verified(record)):
                return rule.describe()
        if record.uid == 0:
            if record.comm in self._names:
                return f"protected name {record.comm!r} (root-owned)"
            for pattern in self._cmdline:
                if pattern.search(record.cmdline):
                    return f"protected cmdline pattern {pattern.pattern!r} (root-owned)"
        return None

    def take_identities(self) -> dict[tuple[int, int], FileId | None]:
        """The executables read since the last call, by process identity (then forgotten):
        the scan's protection pass has read them already, so records can carry them."""
        taken, self._identities = self._identities, {}
        return taken

    def cgroup(self, path: str) -> str | None:
        """Why the group itself must not be killed (members aside), or None."""
        if path in ("", "/"):
            return "the root cgroup"
        if self.self_cgroup is not None and within(self.self_cgroup, (path,)):
            return "holds pressured itself"
        root = within(path, self.settings.protect_cgroups)
        if root is not None:
            return f"protected cgroup {root}"
        return self._omitted(path)

    def _omitted(self, path: str | None) -> str | None:
        marked = self.omit_marks.marked(path) if self.omit_marks is not None else None
        if marked is None:
            return None
        return f"cgroup {marked} is marked omit (systemd ManagedOOMPreference=omit)"
