"""Parsed files kept across runs: a one-shot render skips the TOML and YAML parsers (and their
imports) for files that have not changed since the last run.

``-onetime`` is what cloud-init and cron run on every VM, and each run starts from nothing: the
in-process ``filecache`` cannot help it. Loading tomllib and PyYAML and parsing conf.d and the
data files was about a third of a one-shot render's CPU. The parsed forms are plain data (dicts,
lists, strings, numbers), so they are kept in ``<state_dir>/parsed.cache`` with ``marshal``: no
import to read them back.

The same rules as ``filecache``: an entry counts while the file's inode, size, mtime and ctime are
unchanged, and an entry is only written for a file left alone longer than ``SETTLED_NS`` (a file
rewritten twice within one timestamp tick at the same size would otherwise look unchanged). The
file is stat'ed before it is read, so content can only be newer than its stamp, never older.

Crash-safe without fsync: the cache is replaced by an atomic rename, carries a checksum, and one
that is torn, foreign or unreadable is simply ignored (everything is parsed again). A cache that
cannot be written (a read-only or absent state directory) is not an error either.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pitrix.agent.filecache import SETTLED_NS, Stamp, stamp_of

T = TypeVar("T")
FILE_NAME = "parsed.cache"
# Format and interpreter: marshal's own format follows the Python version.
_MAGIC = b"pitrix-parsed-1-%d.%d\n" % sys.version_info[:2]
_PLAIN = (str, int, float, bool, type(None))


def plain(value: object) -> bool:
    """Whether ``value`` is made only of what a parser of TOML or YAML text gives back and
    ``marshal`` keeps exactly (no dates, no sets, no bytes)."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, list):
        return all(plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return False


class ParseCache:
    """The parsed form of files, by kind ("toml", "yaml") and path, read once and saved once."""

    def __init__(self, path: Path | None) -> None:
        self._path = path  # None: nothing kept (no state directory)
        self._entries: dict[str, tuple[Stamp, Any]] = self._read() if path is not None else {}
        self._used: set[str] = set()
        self._dirty = False

    @classmethod
    def in_dir(cls, state_dir: Path) -> ParseCache:
        return cls(state_dir / FILE_NAME)

    def _read(self) -> dict[str, tuple[Stamp, Any]]:
        assert self._path is not None
        try:
            blob = self._path.read_bytes()
        except OSError:
            return {}
        head, _, rest = blob.partition(b"\n")
        if head + b"\n" != _MAGIC or len(rest) < 4:
            return {}
        body, crc = rest[:-4], rest[-4:]
        if zlib.crc32(body).to_bytes(4, "big") != crc:
            return {}
        try:
            entries = marshal.loads(body)
        except (EOFError, ValueError, TypeError):
            return {}
        if not isinstance(entries, dict):
            return {}
        good: dict[str, tuple[Stamp, Any]] = {}
        for key, entry in entries.items():
            if (
                isinstance(key, str)
                and isinstance(entry, tuple)
                and len(entry) == 2
                and isinstance(entry[0], tuple)
                and len(entry[0]) == 4
                and all(type(n) is int for n in entry[0])
                and plain(entry[1])
            ):
                good[key] = (entry[0], entry[1])
        return good

    def get(self, kind: str, path: Path, parse: Callable[[], T]) -> T:
        """``parse()``'s result for ``path``, from the cache while the file is unchanged.

        What ``parse`` raises goes to the caller and nothing is kept. A result that is not plain
        data is returned but not kept.
        """
        key = f"{kind}\0{path}"
        try:
            st = os.stat(path)
        except OSError:
            return parse()  # its own error, in its own words
        stamp = stamp_of(st)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp:
            self._used.add(key)
            value: T = entry[1]
            return value
        value = parse()
        if time.time_ns() - st.st_mtime_ns > SETTLED_NS and plain(value):
            self._entries[key] = (stamp, value)
            self._used.add(key)
            self._dirty = True
        return value

    def save(self) -> None:
        """Keep what this run used (entries of files it no longer reads are dropped), when it
        made anything new; never raises for a state directory it cannot write."""
        if self._path is None:
            return
        stale = set(self._entries) - self._used
        if not self._dirty and not stale:
            return
        body = marshal.dumps({k: v for k, v in self._entries.items() if k in self._used})
        # One staged name, so a crash leaves at most one stray file; two runs writing it at once
        # can only tear it, which the checksum catches.
        staged = self._path.with_name(f".{FILE_NAME}.new")
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # 0600: the values may be secrets whatever the data file's own mode was.
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(_MAGIC + body + zlib.crc32(body).to_bytes(4, "big"))
            os.replace(staged, self._path)
        except OSError:
            with contextlib.suppress(OSError):
                staged.unlink(missing_ok=True)
            return
        self._dirty = False
