"""Cluster ownership between replicas over a real etcd: claims, restarts, a lost lease."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dead_cloud import DEAD_CLOUD

from pitrix.runtime.keys import cluster_key, owner_key
from pitrix.runtime.ownership import Ownership
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.service import RuntimeService
from pitrix.sealing import Sealer
from pitrix.store import Store, StoreUnavailable

APP = {"name": "demo", "roles": [{"name": "web", "count": 1, "image": "demo"}]}


async def nothing(_: str) -> None:
    return None


async def test_one_owner_and_a_restarted_replica_takes_its_keys_back(store: Store) -> None:
    first = Ownership(store, "a", 5, nothing)
    second = Ownership(store, "b", 5, nothing)
    again = Ownership(store, "a", 5, nothing)  # replica a, restarted: a new lease, the same id
    for ownership in (first, second, again):
        await ownership.start()
    try:
        assert await first.claim("cl-1")
        assert not await second.claim("cl-1")
        assert await again.claim("cl-1")
        kv = await store.get(owner_key("cl-1"))
        assert kv is not None and (kv.text, kv.lease) == ("a", again.lease_id)
        await again.release("cl-1")
        assert await second.claim("cl-1")
        await first.release("cl-1")  # not the owner any more: changes nothing
        assert await second.owner("cl-1") == "b"
    finally:
        for ownership in (first, second, again):
            await ownership.close()


def test_replica_ids_are_checked() -> None:
    with pytest.raises(ValueError, match="replica"):
        Ownership(None, "a/b", 5, nothing)  # type: ignore[arg-type]


async def test_a_lost_lease_is_replaced_though_etcd_refuses_a_grant_and_claims_wait_for_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between losing its lease and holding a new one a replica has none: a claim (a create
    accepted then) waits for the new lease instead of failing, and a grant etcd refuses (it is
    mostly etcd's silence that lost the lease) is asked again, not the end of the replica's lease."""
    ownership = Ownership(store, "a", 3, nothing)
    await ownership.start()
    ownership.follow(await store.revision() + 1)
    grant = store.grant_lease
    asked, refuse = asyncio.Event(), asyncio.Event()

    async def refused_once(ttl: int) -> tuple[int, int]:
        if not asked.is_set():
            asked.set()
            await refuse.wait()
            raise StoreUnavailable("no etcd endpoint answered (the test's)")
        return await grant(ttl)

    monkeypatch.setattr(store, "grant_lease", refused_once)
    try:
        before = ownership.lease_id
        assert await store.revoke_lease(before)  # etcd forgets it: the keeper notices, a grant is asked
        await asyncio.wait_for(asked.wait(), 30)
        claim = asyncio.create_task(ownership.claim("cl-2"))
        refuse.set()
        assert await asyncio.wait_for(claim, 30)
        kv = await store.get(owner_key("cl-2"))
        assert kv is not None and kv.lease == ownership.lease_id != before
    finally:
        await ownership.close()


async def wait_owner(store: Store, cid: str, differs_from: int, timeout: float = 30.0) -> Any:
    """The owner key once it is held on a lease other than ``differs_from`` (watching, no polling)."""
    kv = await store.get(owner_key(cid))
    if kv is not None and kv.lease != differs_from:
        return kv
    async for batch in _watch(store, cid, timeout):
        for event in batch.events:
            if event.type == "put":
                kv = await store.get(owner_key(cid))
                if kv is not None and kv.lease != differs_from:
                    return kv
    raise AssertionError("watch ended")


async def _watch(store: Store, cid: str, timeout: float) -> Any:
    async with asyncio.timeout(timeout):
        async for batch in store.watch_prefix(owner_key(cid)):
            yield batch


async def test_a_lost_lease_drops_everything_and_claims_again(store: Store) -> None:
    service = RuntimeService(
        store, RecoveryPolicy(enabled=False), sealer=Sealer.generate(), replica="solo", owner_ttl=3
    )
    await service.start()
    try:
        await service.put_runtime(DEAD_CLOUD)
        cluster, _ = await service.create_cluster(owner="o", runtime="dead", app=APP)
        before = service.ownership.lease_id
        kv = await store.get(owner_key(cluster.id))
        assert kv is not None and kv.lease == before
        # etcd forgets the lease (as after a long partition): the owner key goes with it
        assert await store.revoke_lease(before)
        kv = await wait_owner(store, cluster.id, before)
        assert kv.text == "solo" and kv.lease == service.ownership.lease_id != before
    finally:
        await service.stop()


async def test_a_lease_lost_again_while_clusters_are_reconsidered_is_replaced_at_once(store: Store) -> None:
    """After a regain every cluster is reconsidered (a read each: minutes for hundreds on a starved
    host). A lease lost again meanwhile is replaced and announced at once: the replica stays in
    the fleet, and the others hand its share back, instead of waiting out the reading."""
    reading, done = asyncio.Event(), asyncio.Event()
    announced: asyncio.Queue[int] = asyncio.Queue()

    async def slow(_: str) -> None:
        reading.set()
        await done.wait()

    async def announce(lease: int) -> None:
        await announced.put(lease)

    await store.put(cluster_key("cl-slow"), "{}")
    ownership = Ownership(store, "a", 3, slow, announce=announce)
    await ownership.start()
    ownership.follow(await store.revision() + 1)
    try:
        first = await asyncio.wait_for(announced.get(), 30)
        assert await store.revoke_lease(first)
        second = await asyncio.wait_for(announced.get(), 30)
        await asyncio.wait_for(reading.wait(), 30)  # reconsidering, held there by the test
        assert await store.revoke_lease(second)
        third = await asyncio.wait_for(announced.get(), 30)
        assert len({first, second, third}) == 3 and not done.is_set()
        assert ownership.lease_id == third
    finally:
        done.set()
        await ownership.close()
