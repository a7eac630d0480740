"""systemd's oomd marks on cgroups, and which groups are marked *omit*.

systemd writes a unit's ``ManagedOOMPreference=`` as an extended attribute of the unit's cgroup:
``user.oomd_prefer``/``user.oomd_avoid``/``user.oomd_omit`` (``trusted.`` when systemd runs as
root with the capability for it). *omit* means "never pick this": pressured treats it as
protection, decided once for every policy by :class:`~pressured.protection.Protection`, and
for the group's descendants too (a service's own subgroups are still the service). Before it
was honoured by some policies for the scope's direct children only, and the fallback policy
took the omitted service whole.

A mark is read with one ``listxattr`` per group and kept for ``ttl_s``, so a scan of a
thousand processes in a dozen services reads a dozen directories, not a thousand.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from pressured.kernel.cgroupfs import Cgroup, CgroupLayout

PREFER_XATTRS = ("trusted.oomd_prefer", "user.oomd_prefer")
AVOID_XATTRS = ("trusted.oomd_avoid", "user.oomd_avoid")
OMIT_XATTRS = ("trusted.oomd_omit", "user.oomd_omit")

MARK_TTL_S = 30.0
"""How long a group's mark is trusted before it is read again (systemd sets it when the unit
starts; a daemon-reload can change it)."""
CACHE_LIMIT = 8192
"""Groups remembered at most; the cache starts afresh when full."""


class OmitMarks:
    """``marked(path)``: the nearest group at or above ``path`` marked omit, or None."""

    def __init__(
        self,
        layout: CgroupLayout,
        *,
        ttl_s: float = MARK_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.layout = layout
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[bool, float]] = {}

    def marked(self, path: str | None) -> str | None:
        if path is None or self.layout.unified is None:
            return None
        now = self._clock()
        current = path.rstrip("/") or "/"
        while True:
            if self._own_mark(current, now):
                return current
            if current == "/":
                return None
            current = current.rsplit("/", 1)[0] or "/"

    def _own_mark(self, path: str, now: float) -> bool:
        cached = self._cache.get(path)
        if cached is not None and now - cached[1] < self.ttl_s:
            return cached[0]
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        try:
            names = os.listxattr(Cgroup(self.layout, path).directory)
        except OSError:  # gone, or no xattr support: unmarked
            names = []
        mark = any(name in OMIT_XATTRS for name in names)
        self._cache[path] = (mark, now)
        return mark
