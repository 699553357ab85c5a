"""The ``file`` backend: YAML files flattened into keys, as confd's file backend reads them.

Watching is done by polling the files' modification time and size: there is no inotify in the
stdlib, and this backend serves local testing and static setups, not fleets.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitrix.agent.config import AgentConfig
from pitrix.agent.errors import BackendError
from pitrix.agent.memkv import MemKV

if TYPE_CHECKING:
    import asyncio

    from pitrix.agent.parsecache import ParseCache


@functools.cache
def _loader() -> type:
    """PyYAML's safe loader (libyaml's parser where PyYAML has it) that leaves timestamps as
    written: Go's YAML decoder keeps ``2024-01-02`` a string when decoding into an interface, so
    confd templates see the text, not a reformatted date.

    Made on first use: PyYAML's import is a sixth of a one-shot render, and a one-shot whose data
    files are unchanged reads them from ``ParseCache`` without it.
    """
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    resolvers = {
        first: [(tag, rx) for tag, rx in found if tag != "tag:yaml.org,2002:timestamp"]
        for first, found in base.yaml_implicit_resolvers.items()
    }
    return type("_Loader", (base,), {"yaml_implicit_resolvers": resolvers})


def _parse_file(path: Path) -> dict[str, str]:
    """One YAML file's keys and values, flattened as confd's file backend does."""
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise BackendError(f"file backend: {path}: {exc.strerror}") from None
    try:
        tree: Any = yaml.load(text, Loader=_loader())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise BackendError(f"file backend: {path}: invalid YAML: {exc}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise BackendError(f"file backend: {path}: the top level must be a mapping")
    try:
        return MemKV.from_tree(tree).as_dict()
    except ValueError as exc:
        raise BackendError(f"file backend: {path}: {exc}") from None


class FileBackend:
    """Values from one or more YAML files; later files override earlier ones key by key."""

    def __init__(self, files: list[Path], poll_interval: float = 1.0, filter: str = "*") -> None:
        if not files:
            raise BackendError("file backend: no files given")
        self._files = list(files)
        self._filter = filter
        self._poll_interval = poll_interval
        # asyncio is loaded by the first watch: a one-shot render (``oneshot``) runs with no loop.
        self._closing = False
        self._closed: asyncio.Event | None = None
        self.revision = 0
        # The files' stamps taken just before the last read: a watch compares against these, so a
        # write that lands between a read and the next watch is not missed.
        self._seen: tuple[tuple[int, int], ...] | None = None
        # Each file's keys as the last run read them, while it is unchanged (a one-shot's).
        self.parsed: ParseCache | None = None

    @classmethod
    def from_config(cls, config: AgentConfig) -> FileBackend:
        return cls(config.files, filter=config.filter)

    async def get_values(self, keys: list[str]) -> dict[str, str]:
        import asyncio

        return await asyncio.to_thread(self.read_values, keys)

    def read_values(self, keys: list[str]) -> dict[str, str]:
        """``get_values``, blocking: the files are read in the calling thread."""
        merged = self._load()
        return {k: v for k, v in merged.items() if any(k.startswith(key) for key in keys)}

    def _load(self) -> dict[str, str]:
        self._seen = self._stamp()
        merged: dict[str, str] = {}
        for path in self._paths():
            if self.parsed is None:
                merged.update(_parse_file(path))
            else:
                merged.update(self.parsed.get("yaml", path, functools.partial(_parse_file, path)))
        return merged

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self._paths():
            try:
                st = path.stat()
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((-1, -1))
        return tuple(stamps)

    def _paths(self) -> list[Path]:
        """The files to read: each file given, and in each directory given (as confd) every file
        below it whose name matches ``-filter``, in lexical order."""
        out: list[Path] = []
        for path in self._files:
            if path.is_dir():
                self._walk(path, out)
            else:
                out.append(path)
        return out

    def _walk(self, directory: Path, out: list[Path]) -> None:
        """Go's ``filepath.Walk`` order: entries by name, a directory's files where it sorts."""
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise BackendError(f"file backend: {directory}: {exc.strerror}") from None
        for entry in entries:
            if entry.is_dir():
                self._walk(Path(entry.path), out)
            elif fnmatch.fnmatchcase(entry.name, self._filter):
                out.append(Path(entry.path))

    async def watch(self, prefix: str, keys: list[str], last_index: int) -> int:
        """Return ``last_index + 1`` once any file's mtime or size differs from the last read."""
        import asyncio

        if self._closed is None:
            self._closed = asyncio.Event()
            if self._closing:
                self._closed.set()
        start = self._seen if self._seen is not None else await asyncio.to_thread(self._stamp)
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._closed.wait()
            now = await asyncio.to_thread(self._stamp)
            if now != start:
                # A following watch (the agent's quiescence window) waits for a change after this one.
                self._seen = now
                return last_index + 1
        return last_index

    async def close(self) -> None:
        self._closing = True
        if self._closed is not None:
            self._closed.set()
