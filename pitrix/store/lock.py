"""Locks and leader elections the etcd way: a queue of leased keys ordered by creation revision.

Each contender writes one key under the lock's prefix, on its own lease. The owner is the key
with the lowest create revision; everyone else watches only the key just before its own and
re-checks when that one is deleted, so a release wakes one waiter (no thundering herd) and no
one polls. A crashed holder's key disappears with its lease, so the queue moves on by itself.

The holder's own key is watched too: if it vanishes (lease expired or revoked by someone else)
``lost`` is set, because from then on another contender may hold what this one thinks it holds.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger
from pitrix.store.client import Store, StoreError
from pitrix.store.lease import KeptLease
from pitrix.store.types import KV, Compare, Op
from pitrix.store.watch import watch_key

LOCKS_PREFIX = "/_locks/"
ELECTIONS_PREFIX = "/_elections/"


def _queue_prefix(root: str, name: object, field: str = "name") -> str:
    if not isinstance(name, str) or not name:
        raise StoreError(f"{field}: expected a non-empty str, got {name!r}")
    # Quote "/" so that lock "a" never sees the contenders of lock "a/b" under its prefix.
    return f"{root}{quote(name, safe='')}/"


class _Queue:
    """One contender's place in a queue of leased keys: join, wait for the front, hold, leave."""

    def __init__(self, store: Store, prefix: str, ttl: int, what: str) -> None:
        self.store = store
        self.prefix = prefix
        self.lease = KeptLease(store, ttl)
        self.what = what
        self.key: str | None = None
        self.revision = 0
        self.lost = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None
        self._log = get_logger("pitrix.store.lock", prefix=store.prefix, lock=what)

    async def join_and_wait(self, value: bytes) -> None:
        """Queue up and return once at the front; on any failure or cancellation, leave the queue."""
        if self.key is not None:
            raise StoreError(f"{self.what}: already held or queued")
        await self.lease.grant()
        try:
            key = f"{self.prefix}{self.lease.id:x}"
            result = await self.store.txn(
                [Compare(key, "create", "==", 0)],
                [Op("put", key, value, self.lease.id)],
                [Op("get", key)],
            )
            self.key = key
            existing = result.gets[0] if not result.succeeded and result.gets else None
            self.revision = existing.create_revision if existing is not None else result.revision
            header = await self._wait_for_front()
            self.lost.clear()
            self._monitor = asyncio.get_running_loop().create_task(self._watch_own_key(header + 1))
        except BaseException:
            await self.leave()
            raise

    async def _wait_for_front(self) -> int:
        """Wait until no key older than ours remains; returns the revision at which that held."""
        start, end = self.store.prefix_range(self.prefix)
        while True:
            if self.lease.lost.is_set():
                raise StoreError(f"{self.what}: lease lost while waiting")
            kvs, _, header = await self.store.range(
                start,
                end,
                limit=1,
                sort_target="create",
                sort_order="descend",
                max_create_revision=self.revision - 1,
            )
            if not kvs:
                return header
            predecessor = kvs[0]
            self._log.debug("lock.waiting", behind=predecessor.key)
            await self._wait_deleted(predecessor, header + 1)

    async def _wait_deleted(self, predecessor: KV, from_revision: int) -> None:
        async def deleted() -> None:
            async for batch in watch_key(self.store, predecessor.key, from_revision):
                if batch.resync and not batch.state:
                    return
                if any(event.type == "delete" for event in batch.events):
                    return

        waiter = asyncio.ensure_future(deleted())
        lost = asyncio.ensure_future(self.lease.lost.wait())
        try:
            await asyncio.wait({waiter, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(waiter, lost)
        if waiter.done() and not waiter.cancelled():
            waiter.result()  # surface a watch error

    async def _watch_own_key(self, from_revision: int) -> None:
        """Set ``lost`` when our key goes away behind our back or the lease cannot be kept."""
        assert self.key is not None
        key = self.key

        async def gone() -> None:
            async for batch in watch_key(self.store, key, from_revision):
                if batch.resync and not any(kv.key == key for kv in batch.state):
                    return
                if any(event.type == "delete" for event in batch.events):
                    return

        waiter = asyncio.ensure_future(gone())
        lease_lost = asyncio.ensure_future(self.lease.lost.wait())
        try:
            await asyncio.wait({waiter, lease_lost}, return_when=asyncio.FIRST_COMPLETED)
            self._log.warning("lock.lost", key=key)
            self.lost.set()
        except StoreError as exc:
            self._log.warning("lock.monitor_failed", error=str(exc))
            self.lost.set()
        finally:
            await cancel_and_wait(waiter, lease_lost)

    async def leave(self) -> None:
        """Delete our key and revoke the lease (safe to call in any state, more than once)."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            await cancel_and_wait(monitor)
        key, self.key = self.key, None
        if key is not None:
            try:
                await self.store.delete(key)
            except StoreError as exc:
                # The lease revoke below deletes the key too; if that fails as well, the TTL will.
                self._log.warning("lock.release_failed", key=key, error=str(exc))
        await self.lease.revoke()
        self.lease = KeptLease(self.store, self.lease.ttl)


class Lock:
    """``async with store.lock(name):`` mutual exclusion across every process sharing the store.

    ``revision`` (the create revision of our key) grows with each holder: usable as a fencing
    token. ``lost`` is set if the lock slipped away while held.
    """

    def __init__(self, store: Store, name: str, ttl: int = 15) -> None:
        self.name = name
        self._queue = _Queue(store, _queue_prefix(LOCKS_PREFIX, name), ttl, f"lock {name}")

    @property
    def lost(self) -> asyncio.Event:
        return self._queue.lost

    @property
    def revision(self) -> int:
        return self._queue.revision

    @property
    def key(self) -> str | None:
        return self._queue.key

    @property
    def held(self) -> bool:
        return self._queue.key is not None and self._queue._monitor is not None and not self.lost.is_set()

    async def acquire(self) -> None:
        await self._queue.join_and_wait(b"")

    async def release(self) -> None:
        await self._queue.leave()

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Election:
    """A leader election: ``await campaign()`` returns once ``candidate`` leads.

    Candidates queue like lock contenders and the front of the queue leads, so followers take
    over in the order they campaigned. ``lost`` is set if leadership slipped away (lease expired
    or revoked); the leader must then stop acting as one.
    """

    def __init__(self, store: Store, name: str, candidate: str, ttl: int = 15) -> None:
        if not isinstance(candidate, str) or not candidate:
            raise StoreError(f"candidate: expected a non-empty str, got {candidate!r}")
        self.name = name
        self.candidate = candidate
        self.store = store
        self._prefix = _queue_prefix(ELECTIONS_PREFIX, name)
        self._queue = _Queue(store, self._prefix, ttl, f"election {name}")

    @property
    def lost(self) -> asyncio.Event:
        return self._queue.lost

    @property
    def is_leader(self) -> bool:
        return self._queue.key is not None and self._queue._monitor is not None and not self.lost.is_set()

    @property
    def lease_id(self) -> int:
        return self._queue.lease.id

    async def campaign(self) -> None:
        await self._queue.join_and_wait(self.candidate.encode())

    async def leader(self) -> str | None:
        """The current leader's candidate id, or ``None`` when nobody campaigns."""
        start, end = self.store.prefix_range(self._prefix)
        kvs, _, _ = await self.store.range(start, end, limit=1, sort_target="create", sort_order="ascend")
        return kvs[0].value.decode(errors="replace") if kvs else None

    async def resign(self) -> None:
        await self._queue.leave()

    async def __aenter__(self) -> Election:
        await self.campaign()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.resign()
