"""What the agent derives from files (parsed templates, resource definitions), kept while the file
stays the same, so a watch round re-reads neither.

A file counts as the same while its inode, size, mtime and ctime are. Timestamps are coarse (a
kernel tick), so a file rewritten twice within one tick at the same size would look unchanged: as
git does with its index, an entry made while the file was that young is not trusted, and the file
is read again until it has been left alone for ``SETTLED_NS``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

# Past any filesystem's timestamp granularity (FAT's is 2 s) and any clock step between the
# writer's and our reading of it.
SETTLED_NS = 3_000_000_000

Stamp = tuple[int, int, int, int]


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _Entry(Generic[T]):
    # Not a dataclass: its generated methods are compiled at import, paid by every agent start.
    __slots__ = ("stamp", "trusted", "value")

    def __init__(self, stamp: Stamp, trusted: bool, value: T) -> None:
        self.stamp = stamp
        self.trusted = trusted
        self.value = value


class FileCache(Generic[T]):
    """One value per path, re-made by ``make`` when the file changed (or is too young to trust)."""

    def __init__(self) -> None:
        self._entries: dict[Path, _Entry[T]] = {}

    def get(self, path: Path, st: os.stat_result, make: Callable[[], T]) -> tuple[T, bool]:
        """The value for ``path`` as ``st`` found it, and whether it was made just now.

        ``make`` raising leaves nothing cached: the next call tries again.
        """
        stamp = stamp_of(st)
        entry = self._entries.get(path)
        if entry is not None and entry.trusted and entry.stamp == stamp:
            return entry.value, False
        value = make()
        trusted = time.time_ns() - st.st_mtime_ns > SETTLED_NS
        self._entries[path] = _Entry(stamp, trusted, value)
        return value, True

    def keep_only(self, paths: set[Path]) -> None:
        """Forget the files that are gone (a resource removed from conf.d)."""
        for path in [p for p in self._entries if p not in paths]:
            del self._entries[path]
