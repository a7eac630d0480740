"""cgroup layout discovery and the cgroup files pressured reads and writes.

Three layouts exist in the wild:

* ``v2``: one cgroup2 mount (usually ``/sys/fs/cgroup``) with every controller;
* ``hybrid``: cgroup2 mounted beside v1 hierarchies (systemd's old default, our dev machines:
  ``/sys/fs/cgroup/unified`` for v2, memory bound to v1 at ``/sys/fs/cgroup/memory``). v2 gives
  pressure files and ``cgroup.kill``; memory accounting comes from the v1 memcg;
* ``v1``: no cgroup2 mount at all; no per-group PSI, no ``cgroup.kill``.

Paths inside a hierarchy are written the way ``/proc/<pid>/cgroup`` writes them: ``/a/b``.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import os
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pressured.errors import KernelError, ParseError
from pressured.kernel.psi import Pressure, read_pressure

UNLIMITED = -1
MEMCG_V1_SEARCH_INTERVAL_S = 10.0
"""A scope whose members hold no v1 memcg of their own is searched again at most this often."""


class LayoutMode(StrEnum):
    V2 = "v2"
    HYBRID = "hybrid"
    V1 = "v1"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Mount:
    mount_point: str
    fs_type: str
    root: str
    """The hierarchy path mounted here (``/`` on the host, a subpath inside many containers)."""
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    mode: LayoutMode
    unified: Mount | None
    v1: dict[str, Mount] = field(default_factory=dict)
    """v1 hierarchies by controller name (``memory``, ``cpu`` ...)."""

    @property
    def memory_v1(self) -> Mount | None:
        return self.v1.get("memory")

    def v2_dir(self, path: str) -> Path:
        """The directory of v2 cgroup ``path``."""
        if self.unified is None:
            raise KernelError("no cgroup2 hierarchy is mounted")
        return _join(self.unified, path)

    def v1_dir(self, controller: str, path: str) -> Path:
        mount = self.v1.get(controller)
        if mount is None:
            raise KernelError(f"no cgroup v1 hierarchy has the {controller} controller")
        return _join(mount, path)


def _join(mount: Mount, path: str) -> Path:
    # Inside a container the mount root may be a subpath; /proc/<pid>/cgroup paths are then
    # relative to the namespace root already, so strip the mount root only when it prefixes.
    relative = path
    if mount.root != "/" and (path == mount.root or path.startswith(mount.root + "/")):
        relative = path[len(mount.root) :]
    return Path(mount.mount_point) / relative.lstrip("/")


_OCTAL_DIGITS = frozenset("01234567")

# Superblock options of a v1 cgroup mount that are flags, not controllers (the kernel's
# cgroup1_parse_param). ``name=...`` and ``release_agent=...`` are skipped by their "=".
_V1_NON_CONTROLLER_OPTIONS = frozenset(
    {
        "rw",
        "ro",
        "none",
        "all",
        "noprefix",
        "clone_children",
        "cpuset_v2_mode",
        "xattr",
        "favordynmods",
    }
)


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...). Only exactly
    # three *octal ASCII* digits form an escape: str.isdigit() also accepts "9", "²" and "٣",
    # which int(..., 8) rejects with a ValueError; anything else is kept as written.
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 3 < len(text) and set(text[i + 1 : i + 4]) <= _OCTAL_DIGITS:
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str, source: str = "mountinfo") -> CgroupLayout:
    """Work out the cgroup layout from the text of ``/proc/self/mountinfo``."""
    unified: Mount | None = None
    v1: dict[str, Mount] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        left, sep, right = line.partition(" - ")
        if not sep:
            raise ParseError(source, f"line {number}: no ' - ' separator")
        left_words, right_words = left.split(), right.split()
        if len(left_words) < 5 or len(right_words) < 3:
            raise ParseError(source, f"line {number}: too few fields")
        fs_type = right_words[0]
        if fs_type not in ("cgroup", "cgroup2"):
            continue
        mount = Mount(
            mount_point=_unescape(left_words[4]),
            fs_type=fs_type,
            root=_unescape(left_words[3]),
            options=tuple(right_words[2].split(",")),
        )
        if fs_type == "cgroup2":
            unified = unified or mount
        else:
            for option in mount.options:
                if option in _V1_NON_CONTROLLER_OPTIONS or "=" in option:
                    continue
                v1.setdefault(option, mount)
    if unified is not None and v1.get("memory") is None:
        mode = LayoutMode.V2
    elif unified is not None:
        mode = LayoutMode.HYBRID
    elif v1:
        mode = LayoutMode.V1
    else:
        mode = LayoutMode.NONE
    return CgroupLayout(mode=mode, unified=unified, v1=v1)


def discover_layout(proc_root: str = "/proc") -> CgroupLayout:
    path = f"{proc_root}/self/mountinfo"
    with open(path, encoding="utf-8", errors="replace") as handle:
        return parse_mountinfo(handle.read(), path)


def own_cgroup(pid: int | str = "self", proc_root: str = "/proc") -> str | None:
    """The v2 cgroup path of a process (default: this one)."""
    from pressured.kernel.procfs import parse_cgroup_v2

    with open(f"{proc_root}/{pid}/cgroup", "rb") as handle:
        return parse_cgroup_v2(handle.read())


def own_memcg_v1(pid: int | str = "self", proc_root: str = "/proc") -> str | None:
    from pressured.kernel.procfs import parse_cgroup_v1

    with open(f"{proc_root}/{pid}/cgroup", "rb") as handle:
        return parse_cgroup_v1(handle.read(), "memory")


def _read_text(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _read_bytes(path: str) -> bytes:
    """The whole file as bytes: for big machine-written files (cgroup.procs of a group with
    thousands of members) the text layer is a cost of its own."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_int_or_max(path: Path) -> int:
    text = _read_text(path).strip()
    if text == "max":
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        raise ParseError(str(path), f"not an integer or 'max': {text[:20]!r}") from None


def parse_flat_keyed(text: str, source: str) -> dict[str, int]:
    """Parse ``key value`` lines (``memory.stat``, ``memory.events``, ``cgroup.events``)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            raise ParseError(source, f"line {line[:40]!r} is not 'key integer'") from None
    return values


# v1 memcg reports "unlimited" as a huge page-aligned number.
_V1_UNLIMITED_FLOOR = 1 << 62


@dataclass(frozen=True, slots=True)
class MemoryFigures:
    """Memory accounting of one group, from v2 files or the v1 memcg on hybrid hosts."""

    current_bytes: int
    limit_bytes: int
    """``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1); :data:`UNLIMITED` for none."""
    swap_bytes: int
    low_bytes: int
    min_bytes: int
    source: str
    """``"v2"`` or ``"v1"``."""


class Cgroup:
    """One cgroup, addressed by its v2 path, with the files pressured needs.

    On a hybrid host memory figures come from the v1 memcg at the same path when it exists
    (``memcg_v1_path`` overrides that), since the v2 group has no memory controller there.
    """

    def __init__(self, layout: CgroupLayout, path: str, memcg_v1_path: str | None = None):
        self.layout = layout
        self.path = "/" + path.strip("/") if path.strip("/") else "/"
        self.memcg_v1_path = memcg_v1_path
        # How memcg_v1_path was chosen: "configured", "mirrored" (None: the v2 path), or
        # "members" (found from the members' /proc/PID/cgroup; see kernel/memcg_v1.py).
        self.memcg_v1_origin: str | None = "configured" if memcg_v1_path else None
        # Scope groups only (memcg_v1.resolve_memory_source turns it on): a policy's view of
        # child groups must not borrow figures from a v1 group their siblings share.
        self.discover_memcg_v1 = False
        self._memcg_v1_next_search = 0.0

    def __repr__(self) -> str:
        return f"Cgroup({self.path!r})"

    @property
    def directory(self) -> Path:
        return self.layout.v2_dir(self.path)

    def exists(self) -> bool:
        return self.directory.is_dir()

    def file(self, name: str) -> Path:
        return self.directory / name

    # -- membership ----------------------------------------------------------------------
    def members(self) -> list[int]:
        """PIDs directly in this group (``cgroup.procs``)."""
        return _parse_pids(_read_text(self.file("cgroup.procs")), str(self.file("cgroup.procs")))

    def children(self) -> list[Cgroup]:
        """The direct subgroups. On a hybrid host whose v1 memcg for this group is not at the
        mirrored v2 path (configured, or found from its members), a child's memcg is looked
        for under this group's, where a tree built beside the v2 one puts it; otherwise at its
        own mirrored path, as for any group."""
        children = []
        for entry in os.scandir(self.directory):
            if not entry.is_dir(follow_symlinks=False):
                continue
            child_v1: str | None = None
            if self.memcg_v1_path is not None and self.layout.memory_v1 is not None:
                beside = f"{self.memcg_v1_path.rstrip('/')}/{entry.name}"
                if _join(self.layout.memory_v1, beside).is_dir():
                    child_v1 = beside
            children.append(Cgroup(self.layout, f"{self.path.rstrip('/')}/{entry.name}", child_v1))
        return children

    def all_members(self) -> list[int]:
        """PIDs in this group and every descendant."""
        return list(self.member_paths())

    def member_paths(self, errors: list[tuple[str, OSError]] | None = None) -> dict[int, str]:
        """PID -> cgroup v2 path for this group and every descendant, from one walk: exact and
        fresh, and it spares a scan reading ``/proc/<pid>/cgroup`` for each process.

        With ``errors`` given, a group whose ``cgroup.procs`` cannot be read (EOPNOTSUPP in a
        threaded group, whose processes its threaded domain lists; EACCES) is recorded there
        as ``(path, error)`` and the walk goes on; without it the error is raised."""
        members: dict[int, str] = {}
        base = self.directory

        def walk_error(exc: OSError) -> None:
            if errors is None:
                raise exc
            if not isinstance(exc, FileNotFoundError):
                errors.append((str(exc.filename), exc))

        for dirpath, _dirnames, filenames in os.walk(base, onerror=walk_error):
            if "cgroup.procs" not in filenames:
                continue
            relative = os.path.relpath(dirpath, base)
            path = self.path if relative == "." else f"{self.path.rstrip('/')}/{relative}"
            try:
                pids = _parse_pids(_read_bytes(f"{dirpath}/cgroup.procs"), dirpath)
            except FileNotFoundError:
                continue  # a child removed mid-walk
            except OSError as exc:
                if errors is None:
                    raise
                errors.append((path, exc))
                continue
            members.update(dict.fromkeys(pids, path))
        return members

    def populated(self) -> bool:
        events = parse_flat_keyed(_read_text(self.file("cgroup.events")), "cgroup.events")
        return bool(events.get("populated", 0))

    # -- pressure ------------------------------------------------------------------------
    def pressure_path(self, resource: str = "memory") -> Path:
        return self.file(f"{resource}.pressure")

    def pressure(self, resource: str = "memory") -> Pressure:
        """Careful: see :func:`pressured.kernel.psi.read_pressure` on starving triggers."""
        return read_pressure(self.pressure_path(resource))

    # -- memory --------------------------------------------------------------------------
    def _v1_memory_dir(self) -> Path | None:
        mount = self.layout.memory_v1
        if mount is None:
            return None
        candidate = _join(mount, self.memcg_v1_path or self.path)
        if candidate.is_dir():
            return candidate
        if self.memcg_v1_origin == "configured" or not self.discover_memcg_v1:
            return None  # configured: never second-guessed; child groups: never borrow
        if time.monotonic() < self._memcg_v1_next_search:
            return None  # searched in vain a moment ago: not on every read of an episode
        # Not at the mirrored path: ask the members where their memory is accounted, and keep
        # the answer (a scope's snapshots pass memcg_v1_path on, so this runs once).
        from pressured.kernel.memcg_v1 import members_memcg_v1

        try:
            found = members_memcg_v1(self.all_members(), mount)
        except (OSError, ValueError):  # unreadable group or procfs: no figures, as before
            return None
        if found is None:
            self._memcg_v1_next_search = time.monotonic() + MEMCG_V1_SEARCH_INTERVAL_S
            return None
        self.memcg_v1_path, self.memcg_v1_origin = found, "members"
        candidate = _join(mount, found)
        return candidate if candidate.is_dir() else None

    def memory(self) -> MemoryFigures:
        """Usage and limit. Raises KernelError when no memory accounting reaches this group."""
        v2 = self.directory
        if (v2 / "memory.current").exists():
            swap_file = v2 / "memory.swap.current"
            return MemoryFigures(
                current_bytes=_read_int_or_max(v2 / "memory.current"),
                limit_bytes=_read_int_or_max(v2 / "memory.max"),
                swap_bytes=_read_int_or_max(swap_file) if swap_file.exists() else 0,
                low_bytes=_read_int_or_max(v2 / "memory.low"),
                min_bytes=_read_int_or_max(v2 / "memory.min"),
                source="v2",
            )
        v1 = self._v1_memory_dir()
        if v1 is None:
            raise KernelError(f"no memory accounting for cgroup {self.path}")
        usage = _read_int_or_max(v1 / "memory.usage_in_bytes")
        limit = _read_int_or_max(v1 / "memory.limit_in_bytes")
        memsw = v1 / "memory.memsw.usage_in_bytes"
        swap = max(0, _read_int_or_max(memsw) - usage) if memsw.exists() else 0
        return MemoryFigures(
            current_bytes=usage,
            limit_bytes=UNLIMITED if limit >= _V1_UNLIMITED_FLOOR else limit,
            swap_bytes=swap,
            low_bytes=0,
            min_bytes=0,
            source="v1",
        )

    def memory_events(self) -> dict[str, int]:
        path = self.file("memory.events")
        if not path.exists():
            v1 = self._v1_memory_dir()
            if v1 is None:
                return {}
            # v1 has no memory.events; failcnt counts hits of the limit, the nearest figure.
            return {"max": _read_int_or_max(v1 / "memory.failcnt")}
        return parse_flat_keyed(_read_text(path), str(path))

    def memory_stat(self) -> dict[str, int]:
        path = self.file("memory.stat")
        if not path.exists():
            v1 = self._v1_memory_dir()
            if v1 is None:
                return {}
            path = v1 / "memory.stat"
        return parse_flat_keyed(_read_text(path), str(path))

    def xattrs(self) -> dict[str, bytes]:
        """Extended attributes of the group's directory (oomd reads ``trusted.oomd_*``)."""
        result: dict[str, bytes] = {}
        try:
            for name in os.listxattr(self.directory):
                result[name] = os.getxattr(self.directory, name)
        except OSError:
            pass
        return result

    # -- actions -------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL every process of the group and its descendants at once (Linux 5.14+)."""
        try:
            self.file("cgroup.kill").write_text("1", encoding="ascii")
        except FileNotFoundError:
            if not self.exists():
                raise
            raise KernelError("cgroup.kill is not supported here (Linux 5.14+)") from None

    def freeze(self, frozen: bool = True) -> None:
        self.file("cgroup.freeze").write_text("1" if frozen else "0", encoding="ascii")

    def thaw(self) -> None:
        self.freeze(False)

    # -- lifecycle (tests and the library's own worker groups) ---------------------------
    def create(self) -> Cgroup:
        with contextlib.suppress(FileExistsError):
            self.directory.mkdir()
        return self

    def add(self, pid: int) -> None:
        self.file("cgroup.procs").write_text(str(pid), encoding="ascii")

    def remove(self) -> None:
        """rmdir the group (it must have no processes). A missing group is not an error."""
        try:
            self.directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno_mod.ENOENT:
                raise


def _parse_pids(text: str | bytes, source: str) -> list[int]:
    try:
        return list(map(int, text.split()))
    except ValueError:
        raise ParseError(source, "cgroup.procs holds a non-numeric entry") from None
