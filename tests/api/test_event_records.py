"""The event hub on real etcd: records that are not events stay out, and never hide the ones that are."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

from pitrix.api.events import EventHub, Subscription
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import parse_spec
from pitrix.store import Store
from pitrix.store.tls import EtcdTLS
from pitrix.store.types import Op, WatchBatch

APP = {"name": "a", "version": "1.0.0", "roles": [{"name": "r", "count": 1, "image": "demo", "services": {}}]}


async def test_a_token_in_the_same_revision_does_not_hide_the_node(store: Store) -> None:
    cluster = Cluster(id="cl-t", name="t", owner="alice", runtime="sim", app=parse_spec(APP), counts={"r": 1})
    await store.put("/clusters/cl-t", cluster.model_dump_json())
    hub = EventHub(store)
    await hub.start()
    try:
        async with hub.subscribe("alice") as sub:
            # register writes a node's bootstrap token (a raw string) beside JSON records.
            await store.txn(
                [],
                [
                    Op("put", "/cluster-data/cl-t/tokens/node-1", b"not-json-token"),
                    Op("put", "/cluster-data/cl-t/nodes/node-1", b'{"node_id": "node-1"}'),
                ],
            )
            event = await asyncio.wait_for(sub.queue.get(), 30)
            assert event is not None
            assert (event.kind, event.cluster_id, event.data) == (
                "node",
                "cl-t",
                {"node": {"node_id": "node-1"}},
            )
            assert sub.queue.empty()
    finally:
        await hub.close()


class WatchThatBreaksOnce:
    """The store, but its first watch raises after one batch (a bug, a library error, a stream fault)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.opened = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def watch_prefix(self, prefix: str, from_revision: int | None = None) -> AsyncIterator[WatchBatch]:
        self.opened += 1
        first = self.opened == 1
        async for batch in self._store.watch_prefix(prefix, from_revision):
            yield batch
            if first:
                raise RuntimeError("injected: the watch broke")


def node_op(cid: str, node: str) -> Op:
    return Op("put", f"/cluster-data/{cid}/nodes/{node}", json.dumps({"node_id": node}).encode())


async def next_node(sub: Subscription) -> str:
    event = await asyncio.wait_for(sub.queue.get(), 30)
    assert event is not None, "the stream ended"
    node: str = event.data["node"]["node_id"]
    return node


async def test_a_broken_watch_resumes_after_the_last_revision_and_loses_nothing(store: Store) -> None:
    cluster = Cluster(id="cl-b", name="b", owner="alice", runtime="sim", app=parse_spec(APP), counts={"r": 1})
    await store.put("/clusters/cl-b", cluster.model_dump_json())
    breaking = WatchThatBreaksOnce(store)
    hub = EventHub(cast(Store, breaking))
    await hub.start()
    try:
        async with hub.subscribe("alice") as sub:
            await store.txn([], [node_op("cl-b", "node-1")])
            assert await next_node(sub) == "node-1"
            # The watch is broken now (or about to be); these land before or during its resume.
            for n in (2, 3):
                await store.txn([], [node_op("cl-b", f"node-{n}")])
            assert [await next_node(sub), await next_node(sub)] == ["node-2", "node-3"]
            assert breaking.opened == 2
            assert hub.running
            await store.txn([], [node_op("cl-b", "node-4")])
            assert await next_node(sub) == "node-4"  # node-1 was not delivered twice
    finally:
        await hub.close()


async def test_a_revision_that_cannot_be_dispatched_ends_the_streams_instead_of_skipping_it(
    store: Store,
) -> None:
    hub = EventHub(store)
    await hub.start()
    try:
        async with hub.subscribe(None) as sub:
            await store.put("/clusters/cl-bad", b"{not a cluster")
            assert await asyncio.wait_for(sub.queue.get(), 30) is None
        await store.delete("/clusters/cl-bad")
        cluster = Cluster(
            id="cl-ok", name="ok", owner="alice", runtime="sim", app=parse_spec(APP), counts={"r": 1}
        )
        async with hub.subscribe(None) as sub:  # a reconnecting client is served again
            # As a stream does: what its snapshot already shows is skipped. The hub may still be
            # dispatching cl-bad's delete, which is older than this subscriber's snapshot.
            _, seen = await hub.snapshot(None, None)
            await store.put("/clusters/cl-ok", cluster.model_dump_json())
            event = await asyncio.wait_for(sub.queue.get(), 30)
            while event is not None and event.revision <= seen:
                event = await asyncio.wait_for(sub.queue.get(), 30)
            assert event is not None and (event.kind, event.cluster_id) == ("cluster", "cl-ok")
    finally:
        await hub.close()


async def test_streams_end_when_the_store_closes_under_the_hub(etcd_url: str, etcd_tls: EtcdTLS) -> None:
    store = await Store.connect([etcd_url], prefix=f"/test-{uuid.uuid4().hex}", tls=etcd_tls)
    hub = EventHub(store)
    await hub.start()
    try:
        async with hub.subscribe(None) as sub:
            await store.close()
            assert await asyncio.wait_for(sub.queue.get(), 30) is None
    finally:
        await hub.close()
        await store.close()
