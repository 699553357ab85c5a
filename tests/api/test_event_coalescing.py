"""The event hub keeps the revisions that came in while it was writing the history in one
transaction, then hands them out in order (real etcd; the history's first write held back)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from pitrix.api.event_log import EVENT_LOG, EventLog
from pitrix.api.events import EventHub
from pitrix.runtime.keys import cluster_key, node_key
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import parse_spec
from pitrix.store import Store
from pitrix.store.types import Compare, Op, TxnResult, WatchBatch

APP = {"name": "a", "version": "1.0.0", "roles": [{"name": "r", "count": 1, "image": "demo", "services": {}}]}
NODES = 20


class HeldHistory:
    """The store, but the history's first transaction waits for ``release``; every history
    transaction (one that keeps events; the cursor moves with some of them only) is counted."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.history_writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def txn(
        self, compare: list[Compare], success: list[Op], failure: list[Op] | None = None
    ) -> TxnResult:
        if any(op.key.startswith(EVENT_LOG) for op in success):
            self.history_writes += 1
            if self.history_writes == 1:
                self.holding.set()
                await self.release.wait()
        return await self._store.txn(compare, success, failure)


class WatchedHub(EventHub):
    """A hub that tells when the watch has handed it a revision."""

    def __init__(self, store: Store, history: EventLog) -> None:
        super().__init__(store, history=history)
        self.seen = 0
        self.moved = asyncio.Condition()

    async def _deliver(self, batch: WatchBatch) -> None:
        await super()._deliver(batch)
        async with self.moved:
            self.seen = batch.revision
            self.moved.notify_all()

    async def reached(self, revision: int) -> None:
        async with self.moved:
            await self.moved.wait_for(lambda: self.seen >= revision)


async def test_revisions_that_came_during_a_write_are_kept_in_one_and_handed_out_in_order(
    store: Store,
) -> None:
    held = HeldHistory(store)
    log = EventLog(cast(Store, held))
    hub = WatchedHub(cast(Store, held), history=log)
    await hub.start()
    try:
        async with hub.subscribe(None, "cl-c") as sub:
            cluster = Cluster(
                id="cl-c", name="c", owner="alice", runtime="sim", app=parse_spec(APP), counts={"r": 1}
            )
            first = await store.put(cluster_key("cl-c"), cluster.model_dump_json())
            await asyncio.wait_for(held.holding.wait(), 30)  # the cluster's revision is being kept
            last = 0
            for n in range(NODES):  # each its own revision, while that write is held
                last = await store.put(node_key("cl-c", f"n-{n}"), json.dumps({"node_id": f"n-{n}"}))
            await asyncio.wait_for(hub.reached(last), 30)  # all of them are in the hub's inbox
            assert sub.queue.empty()  # nothing handed out before the history has it
            held.release.set()
            kinds = []
            for _ in range(NODES + 1):
                event = await asyncio.wait_for(sub.queue.get(), 30)
                assert event is not None
                kinds.append(event.kind if event.kind == "cluster" else event.data["node"]["node_id"])
        assert kinds == ["cluster", *(f"n-{n}" for n in range(NODES))]
        # The cluster's revision, then the twenty that came meanwhile: two writes, not twenty-one.
        assert held.history_writes == 2
        kept, _ = await log.read("cl-c")
        assert [e["node"]["node_id"] for e in kept if e["type"] == "node"] == [f"n-{n}" for n in range(NODES)]
        # The cursor moved with the first write only: it moves at most every CURSOR_EVERY seconds.
        assert await log.cursor() == first
    finally:
        await hub.close()
