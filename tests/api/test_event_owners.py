"""Event history with several replicas on real etcd: each cluster's events are kept by its owner
only (once, not once per replica), every replica still serves every cluster's events, and an owner
that goes before recording leaves nothing lost: the next owner catches up at the cluster's next
event."""

from __future__ import annotations

import asyncio
import json

from api_helpers import APP

from pitrix.api.event_log import CURSOR, EventLog
from pitrix.api.events import EventHub, Subscription
from pitrix.runtime.keys import cluster_key, node_key
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import parse_spec
from pitrix.store import Store


async def put_cluster(store: Store, cid: str) -> None:
    cluster = Cluster(id=cid, name=cid, owner="alice", runtime="sim", app=parse_spec(APP), counts={"web": 1})
    await store.put(cluster_key(cid), cluster.model_dump_json())


async def put_node(store: Store, cid: str, node: str) -> int:
    return await store.put(node_key(cid, node), json.dumps({"node_id": node, "status": "running"}))


async def seen(sub: Subscription, cid: str, node: str) -> None:
    while True:
        event = await asyncio.wait_for(sub.queue.get(), 30)
        assert event is not None, "the stream ended"
        if event.cluster_id == cid and event.kind == "node" and event.data["node"]["node_id"] == node:
            return


def hub_of(store: Store, replica: str, owners: dict[str, str]) -> EventHub:
    return EventHub(
        store, history=EventLog(store, replica=replica), records=lambda cid: owners.get(cid) == replica
    )


async def kept_keys(store: Store, cid: str) -> dict[str, int]:
    """Each kept event's key and how many times it was put."""
    kvs, _ = await store.get_prefix(EventLog.prefix(cid))
    return {kv.key: kv.version for kv in kvs}


async def test_only_the_owner_records_and_every_replica_serves_every_cluster(store: Store) -> None:
    owners = {"cl-a": "r1", "cl-b": "r2"}
    hubs = [hub_of(store, "r1", owners), hub_of(store, "r2", owners)]
    for hub in hubs:
        await hub.start()
    try:
        async with hubs[0].subscribe(None) as first, hubs[1].subscribe(None) as second:
            for cid in owners:
                await put_cluster(store, cid)
                for n in range(3):
                    await put_node(store, cid, f"n-{n}")
            for sub in (first, second):
                for cid in owners:
                    await seen(sub, cid, "n-2")
        for cid in owners:
            versions = await kept_keys(store, cid)
            assert len(versions) == 4 and set(versions.values()) == {1}, versions  # each put once
            both = [await hub.kept(cid) for hub in hubs]
            assert (
                [e["id"] for e in both[0][0]]
                == [e["id"] for e in both[1][0]]
                == sorted(k.rpartition("/")[2] for k in versions)
            )
        cursors, _ = await store.get_prefix(f"{CURSOR}/")
        assert sorted(kv.key for kv in cursors) == [f"{CURSOR}/r1", f"{CURSOR}/r2"]
    finally:
        for hub in hubs:
            await hub.close()


async def test_another_replica_serves_an_event_its_owner_has_not_kept_yet(store: Store) -> None:
    owners = {"cl-s": "r1"}  # r1's hub is not running: it records nothing yet
    other = hub_of(store, "r2", owners)
    await other.start()
    try:
        async with other.subscribe(None, "cl-s") as sub:
            await put_cluster(store, "cl-s")
            await put_node(store, "cl-s", "n-0")
            await seen(sub, "cl-s", "n-0")
        assert await kept_keys(store, "cl-s") == {}
        events, newest = await other.kept("cl-s")
        assert [e["type"] for e in events] == ["cluster", "node"] and newest == events[-1]["id"]
        assert await other.kept("cl-s", limit=1) == (events[-1:], newest)
    finally:
        await other.close()


async def test_a_new_owner_records_what_the_old_one_left_unkept(store: Store) -> None:
    owners = {"cl-m": "r1"}
    old, new = hub_of(store, "r1", owners), hub_of(store, "r2", owners)
    for hub in (old, new):
        await hub.start()
    try:
        async with new.subscribe(None, "cl-m") as sub:
            await put_cluster(store, "cl-m")
            await put_node(store, "cl-m", "n-0")
            await seen(sub, "cl-m", "n-0")
            await old.close()  # the owner goes; what follows it never records
            ids = [e["id"] for e in (await new.kept("cl-m"))[0]]
            for n in range(1, 4):
                await put_node(store, "cl-m", f"n-{n}")
            await seen(sub, "cl-m", "n-3")
            assert len(await kept_keys(store, "cl-m")) <= 2
            owners["cl-m"] = "r2"  # adopted: from its next event on, r2 records it
            await put_node(store, "cl-m", "n-4")
            await seen(sub, "cl-m", "n-4")
        events, _ = await EventLog(store).read("cl-m")
        assert [e["node"]["node_id"] for e in events if e["type"] == "node"] == [f"n-{n}" for n in range(5)]
        assert [e["id"] for e in events][: len(ids)] == ids
        assert set((await kept_keys(store, "cl-m")).values()) == {1}
    finally:
        await new.close()


async def test_an_idle_cluster_taken_over_has_what_its_old_owner_left_unkept(store: Store) -> None:
    """No event of the cluster follows the take-over: the new owner's hub still catches up, on its
    own, within seconds."""
    owners = {"cl-i": "r1"}  # r1's hub never runs: it died before recording anything
    new = hub_of(store, "r2", owners)
    await new.start()
    try:
        async with new.subscribe(None, "cl-i") as sub:
            await put_cluster(store, "cl-i")
            last = await put_node(store, "cl-i", "n-0")
            await seen(sub, "cl-i", "n-0")
        assert await kept_keys(store, "cl-i") == {}
        owners["cl-i"] = "r2"
        await asyncio.wait_for(kept_through(store, "cl-i", last), 30)
        events, _ = await EventLog(store).read("cl-i")
        assert [e["type"] for e in events] == ["cluster", "node"]
    finally:
        await new.close()


async def kept_through(store: Store, cid: str, revision: int) -> None:
    """Until the cluster's history holds an event of ``revision`` (read, then watched from there)."""
    prefix = EventLog.prefix(cid)
    mark = f"{prefix}{revision:016d}."
    kvs, read_at = await store.get_prefix(prefix)
    if any(kv.key.startswith(mark) for kv in kvs):
        return
    async for batch in store.watch_prefix(prefix, read_at + 1):
        for kv in batch.state if batch.resync else batch.events:
            if kv.key.startswith(mark):
                return
