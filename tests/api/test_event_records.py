"""The event hub on real etcd: records that are not events stay out, and never hide the ones that are."""

from __future__ import annotations

import asyncio

from pitrix.api.events import EventHub
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import parse_spec
from pitrix.store import Store
from pitrix.store.types import Op

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
