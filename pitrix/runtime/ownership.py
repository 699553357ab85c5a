"""Which pitrixd replica drives which cluster: one owner per cluster, held through an etcd lease.

``/owners/<cid>`` holds the owning replica's id, attached to that replica's lease. A replica that
dies stops renewing; etcd deletes its keys when the lease runs out, every other replica sees the
deletions on its watch, and the first to create the key again adopts the cluster and resumes its
job from the journal. A replica restarted with the same id (pitrixd keeps it in its state dir)
takes its keys back at once instead of waiting for its old lease to expire.

A lease guards nothing by itself: a replica frozen past its lease (a stopped process, a stalled
loop) wakes up still believing it owns its clusters, and the writes it had in flight or makes
before it notices would land over the new owner's. So the writes that carry a job forward (its
journal, its final commit) are transactions guarded by ``fence(cid)``: they apply only while the
owner key is exactly the one this replica wrote or confirmed when it claimed the cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from pitrix.aio import cancel_and_wait
from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.runtime import keys
from pitrix.runtime.keys import owner_key
from pitrix.store import Store, StoreError
from pitrix.store.lease import KeptLease
from pitrix.store.types import Compare, Op

# A lost lease is replaced at once; while etcd cannot grant one, again after these pauses (seconds).
REGAIN_FIRST = 0.5
REGAIN_MAX = 5.0


class LostOwnership(Exception):
    """This replica no longer owns the cluster: a fenced write was refused (or there is no claim
    to fence with). Not the job's failure: the owning replica resumes the job from its journal."""

    def __init__(self, cid: str, what: str = "") -> None:
        super().__init__(f"cluster {cid}: not owned by this replica any more{f' ({what})' if what else ''}")
        self.cluster_id = cid


class Ownership:
    """This replica's lease and its claims on clusters."""

    def __init__(
        self,
        store: Store,
        replica: str,
        ttl: int,
        consider: Callable[[str], Awaitable[None]],
        lost: Callable[[], Awaitable[None]] | None = None,
        announce: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        if not replica or "/" in replica:
            raise ValueError(f"replica: {replica!r} is not a replica id")
        self.store = store
        self.replica = replica
        self.ttl = ttl
        self.consider = consider
        self.on_lost = lost
        self.on_lease = announce  # told each new lease (the fleet record hangs on it)
        self._lease: KeptLease | None = None
        # Set while a lease is held; clear while a lost one is being replaced (claims wait for it).
        self._granted = asyncio.Event()
        # The owner key's mod revision as this replica last wrote or confirmed it, per cluster:
        # any later write to the key (a lease run out, another replica's claim) changes it.
        self._held: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._reclaim: asyncio.Task[None] | None = None  # reconsidering every cluster after a regain
        self.log = get_logger("pitrix.ownership", replica=replica)

    @property
    def lease_id(self) -> int:
        assert self._lease is not None, "ownership not started"
        return self._lease.id

    @property
    def lost(self) -> asyncio.Event:
        assert self._lease is not None, "ownership not started"
        return self._lease.lost

    async def current_lease(self) -> int:
        """The lease a claim goes on now. While a lost lease is being replaced there is none: a
        claim (or a create placed here) waits for the new one rather than fail the request."""
        await self._granted.wait()
        return self.lease_id

    async def start(self) -> None:
        self._lease = await self.store.lease(self.ttl).grant()
        self._granted.set()
        self.log.info("replica lease", lease=f"{self._lease.id:x}", ttl=self.ttl)
        if self.on_lease is not None:
            await self.on_lease(self._lease.id)

    def follow(self, from_revision: int) -> None:
        """Consider a cluster again whenever its record changes or its owner key goes away."""
        clusters = self._follow(keys.CLUSTERS, "cluster", from_revision, deletes=False)
        owners = self._follow(keys.OWNERS, "owner", from_revision, deletes=True)
        self._tasks = [
            asyncio.create_task(clusters, name="follow-clusters"),
            asyncio.create_task(owners, name="follow-owners"),
            asyncio.create_task(self._renew_when_lost(), name="replica-lease"),
        ]

    async def _renew_when_lost(self) -> None:
        """A lost lease means other replicas may own our clusters now: stop, then claim afresh.

        A lease is mostly lost because etcd did not answer in time (a member died, the host is
        overloaded), so etcd may fail the new grant too: it is asked again after a pause until it
        answers. Without that, one failed grant would leave this replica serving its API with no
        lease for good, unable to claim or accept a create.

        Every cluster is reconsidered after the new lease is announced, in a task of its own: that
        is a read per cluster, minutes for hundreds of clusters on a starved host, and a lease
        lost again meanwhile must be replaced (and the replica announced again) at once, not once
        the reading is done. Done inline, a replica that lost its lease twice in a row was out of
        the fleet for as long as the reading took, and the others kept its share.
        """
        while True:
            assert self._lease is not None
            await self._lease.lost.wait()
            if self._reclaim is not None:
                await cancel_and_wait(self._reclaim)  # its claims would go on the lost lease
                self._reclaim = None
            self._granted.clear()
            self.log.error("replica lease lost; dropping every cluster and claiming again")
            if self.on_lost is not None:
                await self.on_lost()
            self._held.clear()  # every fence taken so far is void: the old lease's keys are gone
            old, self._lease = self._lease, None
            await old.revoke()
            backoff = Backoff(REGAIN_FIRST, REGAIN_MAX)
            while True:
                try:
                    await self._regain()
                    break
                except StoreError as exc:
                    pause = backoff.next()
                    self.log.warning(
                        "replica lease not regained yet", error=str(exc), retry_in=round(pause, 2)
                    )
                    await asyncio.sleep(pause)
            self._reclaim = asyncio.create_task(self._reconsider(), name="replica-reclaim")

    async def _regain(self) -> None:
        """Take a new lease (keeping one granted by an earlier try) and announce it."""
        if self._lease is None or not self._lease.active:
            self._granted.clear()  # the lease held since the last try ran out too
            if self._lease is not None:
                stale, self._lease = self._lease, None
                await stale.revoke()
            self._lease = await self.store.lease(self.ttl).grant()
            self.log.info("replica lease", lease=f"{self._lease.id:x}", ttl=self.ttl)
        self._granted.set()
        if self.on_lease is not None:
            await self.on_lease(self._lease.id)

    async def _reconsider(self) -> None:
        """Consider every cluster again (those still ours are claimed on the new lease, the fleet
        deals the others); one that fails is left to the fleet's sweep, not a reason to stop."""
        backoff = Backoff(REGAIN_FIRST, REGAIN_MAX)
        while True:
            try:
                kvs, _ = await self.store.get_prefix(keys.CLUSTERS)
                break
            except StoreError as exc:
                pause = backoff.next()
                self.log.warning("clusters not read after a regain", error=str(exc), retry_in=round(pause, 2))
                await asyncio.sleep(pause)
        for kv in kvs:
            parsed = keys.parse(kv.key)
            if parsed is None or parsed.kind != "cluster":
                continue
            try:
                await self.consider(parsed.cluster_id)
            except StoreError as exc:
                self.log.warning("could not consider cluster", cluster_id=parsed.cluster_id, error=str(exc))

    async def close(self) -> None:
        """Stop following and revoke the lease, so other replicas adopt our clusters at once."""
        await cancel_and_wait(*self._tasks, *([self._reclaim] if self._reclaim is not None else []))
        self._tasks = []
        self._reclaim = None
        self._held.clear()
        self._granted.clear()
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

    async def _follow(self, prefix: str, record: keys.Kind, from_revision: int, *, deletes: bool) -> None:
        async for kind, key in self._events(prefix, from_revision):
            if (kind == "delete") != deletes:
                continue
            parsed = keys.parse(key)
            if parsed is not None and parsed.kind == record:
                cid = parsed.cluster_id
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
        lease = await self.current_lease()
        created = await self.store.txn([Compare(key, "create", "==", 0)], [Op("put", key, mine, lease)])
        if created.succeeded:
            self._held[cid] = created.revision
            self.log.info("cluster claimed", cluster_id=cid)
            return True
        kv = await self.store.get(key)
        if kv is None or kv.value != mine:
            self._held.pop(cid, None)
            return False
        if kv.lease == lease:
            self._held[cid] = kv.mod_revision
            return True
        moved = await self.store.txn([Compare(key, "value", "==", mine)], [Op("put", key, mine, lease)])
        if moved.succeeded:
            self._held[cid] = moved.revision
            self.log.info("cluster taken back from an earlier life", cluster_id=cid)
        else:
            self._held.pop(cid, None)
        return moved.succeeded

    def fence(self, cid: str) -> list[Compare]:
        """The conditions under which a write for ``cid`` may land: the owner key still holds this
        replica's id, unchanged since this replica claimed it on its current lease.

        A lease that ran out deletes the key; a claim by anyone (this replica in a later life
        included) writes it anew: either moves its mod revision, so every fence taken before
        fails. Raises ``LostOwnership`` when this replica holds no claim on ``cid`` now.
        """
        revision = self._held.get(cid)
        if revision is None:
            raise LostOwnership(cid, "no claim held")
        key = owner_key(cid)
        return [Compare(key, "value", "==", self.replica.encode()), Compare(key, "mod", "==", revision)]

    async def release(self, cid: str) -> None:
        key = owner_key(cid)
        self._held.pop(cid, None)
        await self.store.txn([Compare(key, "value", "==", self.replica.encode())], [Op("delete", key)])

    def holds(self, cid: str) -> bool:
        return cid in self._held

    async def hand_over(self, cid: str, unchanged: list[Compare]) -> bool:
        """Let ``cid`` go to another replica, only while ``unchanged`` holds (the cluster idle as
        read) and this replica still owns it on its current claim; False if anything moved."""
        try:
            fence = self.fence(cid)
        except LostOwnership:
            return False
        done = await self.store.txn(fence + unchanged, [Op("delete", owner_key(cid))])
        if done.succeeded:
            self._held.pop(cid, None)
            self.log.info("cluster handed over", cluster_id=cid)
        return done.succeeded
