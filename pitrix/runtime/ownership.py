"""Which pitrixd replica drives which cluster: one owner per cluster, held through an etcd lease.

``/owners/<cid>`` holds the owning replica's id, attached to that replica's lease. A replica that
dies stops renewing; etcd deletes its keys when the lease runs out, every other replica sees the
deletions on its watch, and the first to create the key again adopts the cluster and resumes its
job from the journal. A replica restarted with the same id (pitrixd keeps it in its state dir)
takes its keys back at once instead of waiting for its old lease to expire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger
from pitrix.store import Store
from pitrix.store.lease import KeptLease
from pitrix.store.types import Compare, Op

OWNERS = "/owners/"


def owner_key(cid: str) -> str:
    return f"{OWNERS}{cid}"


class Ownership:
    """This replica's lease and its claims on clusters."""

    def __init__(
        self,
        store: Store,
        replica: str,
        ttl: int,
        consider: Callable[[str], Awaitable[None]],
        lost: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if not replica or "/" in replica:
            raise ValueError(f"replica: {replica!r} is not a replica id")
        self.store = store
        self.replica = replica
        self.ttl = ttl
        self.consider = consider
        self.on_lost = lost
        self._lease: KeptLease | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.log = get_logger("pitrix.ownership", replica=replica)

    @property
    def lease_id(self) -> int:
        assert self._lease is not None, "ownership not started"
        return self._lease.id

    @property
    def lost(self) -> asyncio.Event:
        assert self._lease is not None, "ownership not started"
        return self._lease.lost

    async def start(self) -> None:
        self._lease = await self.store.lease(self.ttl).grant()
        self.log.info("replica lease", lease=f"{self._lease.id:x}", ttl=self.ttl)

    def follow(self, from_revision: int) -> None:
        """Consider a cluster again whenever its record changes or its owner key goes away."""
        clusters = self._follow("/clusters/", from_revision, deletes=False)
        owners = self._follow(OWNERS, from_revision, deletes=True)
        self._tasks = [
            asyncio.create_task(clusters, name="follow-clusters"),
            asyncio.create_task(owners, name="follow-owners"),
            asyncio.create_task(self._renew_when_lost(), name="replica-lease"),
        ]

    async def _renew_when_lost(self) -> None:
        """A lost lease means other replicas may own our clusters now: stop, then claim afresh."""
        while True:
            assert self._lease is not None
            await self._lease.lost.wait()
            self.log.error("replica lease lost; dropping every cluster and claiming again")
            if self.on_lost is not None:
                await self.on_lost()
            old, self._lease = self._lease, None
            await old.revoke()
            self._lease = await self.store.lease(self.ttl).grant()
            self.log.info("replica lease", lease=f"{self._lease.id:x}", ttl=self.ttl)
            kvs, _ = await self.store.get_prefix("/clusters/")
            for kv in kvs:
                await self.consider(kv.key[len("/clusters/") :])

    async def close(self) -> None:
        """Stop following and revoke the lease, so other replicas adopt our clusters at once."""
        await cancel_and_wait(*self._tasks)
        self._tasks = []
        if self._lease is not None:
            lease, self._lease = self._lease, None
            await lease.revoke()

    async def _events(self, prefix: str, from_revision: int) -> AsyncIterator[tuple[str, str]]:
        async for batch in self.store.watch_prefix(prefix, from_revision):
            if batch.resync:
                for kv in batch.state:
                    yield "put", kv.key
                continue
            for event in batch.events:
                yield event.type, event.key

    async def _follow(self, prefix: str, from_revision: int, *, deletes: bool) -> None:
        async for kind, key in self._events(prefix, from_revision):
            if (kind == "delete") != deletes:
                continue
            cid = key[len(prefix) :]
            if cid and "/" not in cid:
                try:
                    await self.consider(cid)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.log.exception("could not consider cluster", cluster_id=cid)

    async def owner(self, cid: str) -> str | None:
        kv = await self.store.get(owner_key(cid))
        return kv.text if kv is not None else None

    async def claim(self, cid: str) -> bool:
        """Own ``cid`` if nobody does, or if the owner is this replica (in this or an earlier life)."""
        key = owner_key(cid)
        mine = self.replica.encode()
        created = await self.store.txn(
            [Compare(key, "create", "==", 0)], [Op("put", key, mine, self.lease_id)]
        )
        if created.succeeded:
            self.log.info("cluster claimed", cluster_id=cid)
            return True
        kv = await self.store.get(key)
        if kv is None or kv.value != mine:
            return False
        if kv.lease == self.lease_id:
            return True
        moved = await self.store.txn(
            [Compare(key, "value", "==", mine)], [Op("put", key, mine, self.lease_id)]
        )
        if moved.succeeded:
            self.log.info("cluster taken back from an earlier life", cluster_id=cid)
        return moved.succeeded

    async def release(self, cid: str) -> None:
        key = owner_key(cid)
        await self.store.txn([Compare(key, "value", "==", self.replica.encode())], [Op("delete", key)])
