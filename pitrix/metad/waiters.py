"""Long-poll waiters indexed by the key prefixes their view depends on.

A write to key K can only change views that depend on K itself or on one of its ancestors, so a
batch of writes looks up a few ancestor paths per key instead of visiting every waiter: a change
to another role's env or another cluster wakes nobody who does not read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import ClassVar

from pitrix.metad.tree import split_path


class Waiter:
    """One held request: resolved with the revision of the change that woke it."""

    __slots__ = ("deps", "future")

    # A waiter that stays in the index after its wake-up (:meth:`WaiterIndex.register`): one
    # connection's seat for its successive long-polls, armed while one is held.
    stays: ClassVar[bool] = False

    def __init__(self, deps: Iterable[str]) -> None:
        self.deps = tuple({_normal(d) for d in deps})
        self.future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def wake(self, revision: int) -> bool:
        """Resolve the waiter; False when it already was."""
        if self.future.done():
            return False
        self.future.set_result(revision)
        return True


class CallbackWaiter(Waiter):
    """A waiter without a future: its wake-up calls ``callback`` there and then, once.

    A poll parked at its connection's gate (pitrix.metad.parking) has no task to resume; its
    wake-up queues the request for aiohttp without a future's 144 bytes and scheduled callback.
    """

    __slots__ = ("_callback",)

    def __init__(self, deps: Iterable[str], callback: Callable[[], None], *, normal: bool = False) -> None:
        # ``normal``: the paths are metad's own (pitrix.metad.keyspace), spelled as the index spells
        # them already. A fan-out's answered agents park their next polls at once, ~20 paths each:
        # checking every path there was a fifth of parking one.
        self.deps = tuple(set(deps)) if normal else tuple({_normal(d) for d in deps})
        self._callback: Callable[[], None] | None = callback

    def wake(self, revision: int) -> bool:
        callback, self._callback = self._callback, None
        if callback is None:
            return False
        callback()
        return True


def _normal(path: str) -> str:
    """``path`` as the index spells it: one leading slash, no empty segments."""
    if path.startswith("/") and "//" not in path and (len(path) == 1 or not path.endswith("/")):
        return path  # already normal, as every path metad builds itself is
    return "/" + "/".join(split_path(path))


def ancestors(key: str) -> list[str]:
    """``key`` and every prefix path above it, root included."""
    parts = split_path(key)
    return ["/" + "/".join(parts[:n]) for n in range(len(parts) + 1)]


class WaiterIndex:
    """The held waiters by dependency path.

    Most paths a waiter depends on are its own (its mapping, its certificate's revocation keys,
    its staged env): such a path maps to the waiter itself, and only a path two waiters share gets
    a set. A set costs 216 bytes even for one member, ~1.3 KiB per idle long-poll in all, which was
    a fifth of what metad holds per connection above OpenSSL's and uvloop's own (bench/metad_idle).
    """

    def __init__(self) -> None:
        self._by_path: dict[str, Waiter | set[Waiter]] = {}
        self._all: set[Waiter] = set()
        self._count_watchers: list[tuple[Callable[[int], bool], asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self._all)

    def add(self, waiter: Waiter) -> None:
        self._all.add(waiter)
        self._index(waiter)
        if self._count_watchers:
            self._check_counts()

    def register(self, waiter: Waiter) -> None:
        """Index a waiter that ``stays`` by its paths, not yet counted as held: :meth:`arm` it
        for each request it holds. A fan-out's answered agents poll again at once; re-indexing
        ~20 paths per poll, and unindexing them at every wake-up, was a third of a poll's cost."""
        self._index(waiter)

    def arm(self, waiter: Waiter) -> None:
        """A registered waiter holds a request now (counted; :meth:`notify_all` wakes it)."""
        self._all.add(waiter)
        if self._count_watchers:
            self._check_counts()

    def disarm(self, waiter: Waiter) -> None:
        """A registered waiter holds nothing now (woken, or its request went): still indexed."""
        if waiter in self._all:
            self._all.discard(waiter)
            if self._count_watchers:
                self._check_counts()

    def unregister(self, waiter: Waiter) -> None:
        """Out of the index altogether (its connection went, or its paths changed)."""
        self.disarm(waiter)
        self._unindex(waiter)

    def _index(self, waiter: Waiter) -> None:
        by_path = self._by_path
        for dep in waiter.deps:
            bucket = by_path.get(dep)
            if bucket is None:
                by_path[dep] = waiter
            elif isinstance(bucket, Waiter):
                by_path[dep] = {bucket, waiter}
            else:
                bucket.add(waiter)

    def _check_counts(self) -> None:
        pending = []
        for predicate, future in self._count_watchers:
            if future.done():
                continue
            if predicate(len(self._all)):
                future.set_result(None)
            else:
                pending.append((predicate, future))
        self._count_watchers = pending

    async def wait_until(self, predicate: Callable[[int], bool]) -> None:
        """Return once the number of held requests satisfies ``predicate`` (observability, tests)."""
        if predicate(len(self._all)):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count_watchers.append((predicate, future))
        await future

    async def wait_for_count(self, wanted: int) -> None:
        await self.wait_until(lambda held: held >= wanted)

    def remove(self, waiter: Waiter) -> None:
        if waiter not in self._all:
            return
        self._all.discard(waiter)
        self._unindex(waiter)
        if self._count_watchers:
            self._check_counts()

    def _unindex(self, waiter: Waiter) -> None:
        by_path = self._by_path
        for dep in waiter.deps:
            bucket = by_path.get(dep)
            if bucket is waiter:
                del by_path[dep]
            elif isinstance(bucket, set):
                bucket.discard(waiter)
                if len(bucket) == 1:
                    by_path[dep] = bucket.pop()

    def _release(self, waiters: Iterable[Waiter], revision: int) -> int:
        woken = 0
        for waiter in list(waiters):
            if not waiter.stays:
                self.remove(waiter)
            elif waiter not in self._all:
                continue  # registered, holding nothing: its next request checks its view itself
            if waiter.wake(revision):  # one that stays disarms itself
                woken += 1
        return woken

    def notify(self, keys: Iterable[str], revision: int) -> int:
        """Wake the waiters depending on any of ``keys``; returns how many were woken."""
        paths: set[str] = set()
        for key in keys:
            paths.update(ancestors(key))
        hit: set[Waiter] = set()
        for path in paths:
            bucket = self._by_path.get(path)
            if isinstance(bucket, Waiter):
                hit.add(bucket)
            elif bucket:
                hit |= bucket
        return self._release(hit, revision)

    def notify_all(self, revision: int) -> int:
        return self._release(self._all, revision)
