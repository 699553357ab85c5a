"""Locks and leader elections the etcd way: a queue of leased keys ordered by creation revision.

Each contender writes one key under the lock's prefix, on its own lease. The owner is the key
with the lowest create revision; everyone else watches only the key just before its own and
re-checks when that one is deleted, so a release wakes one waiter (no thundering herd) and no
one polls. A crashed holder's key disappears with its lease, so the queue moves on by itself.

The holder's own key is watched too: if it vanishes (lease expired or revoked by someone else)
``lost`` is set, because from then on another contender may hold what this one thinks it holds.

No wait here is open-ended. A waiter gives up at its deadline (``LockTimeout``, naming the key it
queued behind), and even within it does not trust one watch alone with its wake-up: it looks at
the queue again every lease TTL. Leaving stops renewing the lease before anything else, so a
leaver cut off half-way (cancelled while etcd is slow) still frees the queue within one TTL; its
keep-alive once outlived such a leaver and held everyone behind it for good.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger
from pitrix.store.client import Store, StoreError, StoreUnavailable
from pitrix.store.lease import KeptLease
from pitrix.store.types import KV, Compare, Op, TxnResult
from pitrix.store.watch import watch_key

LOCKS_PREFIX = "/_locks/"
ELECTIONS_PREFIX = "/_elections/"
# Writing our key again after a reconnect cut the request off (see _Queue._join).
JOIN_ATTEMPTS = 3


class LockTimeout(StoreError):
    """A contender's deadline passed while it was still queued behind another."""


class QueuedLeaseLost(StoreError):
    """A contender's lease ran out while it waited in the queue (etcd slow to answer its renewals):
    its place is gone, and queueing again with a new lease is safe."""


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
        self._leaving: set[asyncio.Future[None]] = set()  # letting go in the background
        self._log = get_logger("pitrix.store.lock", prefix=store.prefix, lock=what)

    async def join_and_wait(self, value: bytes, timeout: float | None = None) -> None:
        """Queue up and return once at the front; on any failure or cancellation, leave the queue.

        ``timeout`` bounds the whole wait (``LockTimeout`` after it); ``None`` waits for as long as
        it takes, still looking at the queue again every lease TTL.
        """
        if self.key is not None:
            raise StoreError(f"{self.what}: already held or queued")
        if timeout is not None and not timeout > 0:
            raise StoreError(f"timeout: expected a positive number of seconds or None, got {timeout!r}")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            await self.lease.grant()
            key = f"{self.prefix}{self.lease.id:x}"
            self.key = key
            result = await self._join(key, value)
            existing = result.gets[0] if not result.succeeded and result.gets else None
            self.revision = existing.create_revision if existing is not None else result.revision
            header = await self._wait_for_front(deadline, timeout)
            self.lost.clear()
            self._monitor = loop.create_task(self._watch_own_key(header + 1))
        except BaseException:
            await self.leave()
            raise

    async def _join(self, key: str, value: bytes) -> TxnResult:
        """Write our key, asking again if a reconnect cut the request off: the create-if-absent
        compare makes a repeat harmless, and its failure branch reads back the key that landed."""
        for attempt in range(1, JOIN_ATTEMPTS + 1):
            try:
                return await self.store.txn(
                    [Compare(key, "create", "==", 0)],
                    [Op("put", key, value, self.lease.id)],
                    [Op("get", key)],
                )
            except StoreUnavailable:
                if attempt == JOIN_ATTEMPTS:
                    raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _wait_for_front(self, deadline: float | None, timeout: float | None) -> int:
        """Wait until no key older than ours remains; returns the revision at which that held."""
        start, end = self.store.prefix_range(self.prefix)
        loop = asyncio.get_running_loop()
        while True:
            if self.lease.lost.is_set():
                raise QueuedLeaseLost(f"{self.what}: lease lost while waiting")
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
            # A watch is the wake-up, not the only one: look at the queue again every lease TTL.
            pause = float(self.lease.ttl)
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    raise LockTimeout(
                        f"{self.what}: still queued after {timeout:g}s behind {predecessor.key} "
                        f"(lease {predecessor.lease:x}, queued at revision {predecessor.create_revision})"
                    )
                pause = min(pause, left)
            self._log.debug("lock.waiting", behind=predecessor.key)
            await self._wait_deleted(predecessor, header + 1, pause)

    async def _wait_deleted(self, predecessor: KV, from_revision: int, pause: float) -> None:
        """Until ``predecessor`` is deleted, our lease is lost, or ``pause`` seconds have passed."""

        async def deleted() -> None:
            async for batch in watch_key(self.store, predecessor.key, from_revision):
                if batch.resync and not batch.state:
                    return
                if any(event.type == "delete" for event in batch.events):
                    return

        waiter = asyncio.ensure_future(deleted())
        lost = asyncio.ensure_future(self.lease.lost.wait())
        try:
            await asyncio.wait({waiter, lost}, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(waiter, lost)
        if waiter.done() and not waiter.cancelled() and waiter.exception() is not None:
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
            if waiter.done() and not waiter.cancelled() and isinstance(waiter.exception(), StoreError):
                self._log.warning("lock.monitor_failed", error=str(waiter.exception()))
            else:
                self._log.warning("lock.lost", key=key)
            self.lost.set()
        finally:
            await cancel_and_wait(waiter, lease_lost)

    async def leave(self) -> None:
        """Give up our place: safe in any state, more than once, and when cut off half-way.

        The lease is let go first: ``revoke`` stops its keep-alive before it awaits anything, so
        even a leaver cancelled right after (etcd slow to answer) leaves a lease that expires
        within its TTL, taking our key with it. Revoking deletes the key too; the explicit delete
        is only for when the revoke could not be told to etcd.
        """
        monitor, self._monitor = self._monitor, None
        key, self.key = self.key, None
        lease, self.lease = self.lease, KeptLease(self.store, self.lease.ttl)
        leaving = asyncio.ensure_future(self._let_go(lease, monitor, key))
        self._leaving.add(leaving)
        leaving.add_done_callback(self._leaving.discard)
        # Shielded: a cancelled leaver returns at once, the letting go goes on (bounded by the
        # store's timeout) instead of being cut off half-way.
        await asyncio.shield(leaving)

    async def _let_go(self, lease: KeptLease, monitor: asyncio.Task[None] | None, key: str | None) -> None:
        if monitor is not None:
            monitor.cancel()  # before the revoke: our own key going is no "lock lost" news now
        await lease.revoke()  # stops renewing before its first await; a failed revoke is left to the TTL
        if monitor is not None:
            await cancel_and_wait(monitor)
        if key is None:
            return
        try:
            await self.store.delete(key)
        except StoreError as exc:
            # The lease's TTL removes the key anyway, now that nobody renews it.
            self._log.warning("lock.release_failed", key=key, error=str(exc))


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

    async def acquire(self, timeout: float | None = None) -> None:
        """Wait for the lock; ``LockTimeout`` if still queued after ``timeout`` seconds."""
        await self._queue.join_and_wait(b"", timeout)

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

    async def campaign(self, timeout: float | None = None) -> None:
        await self._queue.join_and_wait(self.candidate.encode(), timeout)

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
