"""Each cluster's event history on real etcd: kept across a restart, bounded, gone with the cluster,
and continued live by ``?follow=true`` with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ALICE, APP, BOB, bearer, error_of, next_event

from pitrix.api.app import EVENTS
from pitrix.api.event_log import EventLog, HistoryLimits, parse_since
from pitrix.api.events import EventHub, Subscription
from pitrix.runtime.keys import cluster_key, node_key
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import parse_spec
from pitrix.store import Store

Client = TestClient[Any, Any]


async def put_cluster(store: Store, cid: str, owner: str = "alice", state: str = "active") -> None:
    cluster = Cluster(
        id=cid, name=cid, owner=owner, runtime="sim", app=parse_spec(APP), counts={"web": 1}, state=state
    )
    await store.put(cluster_key(cid), cluster.model_dump_json())


async def put_node(store: Store, cid: str, node: str) -> None:
    await store.put(node_key(cid, node), json.dumps({"node_id": node, "status": "running"}))


async def node_seen(sub: Subscription, node: str) -> None:
    while True:
        event = await asyncio.wait_for(sub.queue.get(), 30)
        assert event is not None, "the stream ended"
        if event.kind == "node" and event.data["node"]["node_id"] == node:
            return


async def test_history_outlives_the_hub_and_replays_what_it_missed(store: Store) -> None:
    log = EventLog(store)
    hub = EventHub(store, history=log)
    await hub.start()
    try:
        async with hub.subscribe(None, "cl-h") as sub:
            await put_cluster(store, "cl-h")
            await put_node(store, "cl-h", "n-1")
            await node_seen(sub, "n-1")
    finally:
        await hub.close()
    await put_node(store, "cl-h", "n-2")  # while no hub is recording

    again = EventHub(store, history=EventLog(store))
    await again.start()
    try:
        async with again.subscribe(None, "cl-h") as sub:
            kept, newest = await again.history.read("cl-h")  # type: ignore[union-attr]
            if "n-2" not in json.dumps(kept):
                await node_seen(sub, "n-2")
        kept, newest = await log.read("cl-h")
    finally:
        await again.close()
    nodes = [e["node"]["node_id"] for e in kept if e["type"] == "node"]
    assert kept[0]["type"] == "cluster" and nodes == ["n-1", "n-2"]
    ids = [e["id"] for e in kept]
    assert ids == sorted(set(ids)) and newest == ids[-1]
    assert all(e["time"].endswith("Z") and e["cluster_id"] == "cl-h" for e in kept)


async def test_the_history_is_bounded_by_count_and_age_and_goes_with_the_cluster(store: Store) -> None:
    log = EventLog(store, HistoryLimits(max_events=5, trim_every=1))
    hub = EventHub(store, history=log)
    await hub.start()
    try:
        async with hub.subscribe(None, "cl-b") as sub:
            await put_cluster(store, "cl-b")
            for n in range(8):
                await put_node(store, "cl-b", f"n-{n}")
            await node_seen(sub, "n-7")
            kept, _ = await log.read("cl-b")
            assert [e["node"]["node_id"] for e in kept] == [f"n-{n}" for n in range(3, 8)]

            assert await log.trim("cl-b", now=time.time() + 8 * 86400) == 5
            assert await log.read("cl-b") == ([], None)

            await put_node(store, "cl-b", "n-8")
            await node_seen(sub, "n-8")
            assert len((await log.read("cl-b"))[0]) == 1
            await store.delete(cluster_key("cl-b"))
            while (event := await asyncio.wait_for(sub.queue.get(), 30)) is not None:
                if event.kind == "cluster_removed":
                    break
            assert await log.read("cl-b") == ([], None)
    finally:
        await hub.close()


async def test_follow_continues_the_history_live_without_gap_or_duplicate(api: Client, store: Store) -> None:
    await put_cluster(store, "cl-f")
    first = await api.get("/v1/clusters/cl-f/events?follow=true", headers=bearer(ALICE))
    for n in range(3):
        await put_node(store, "cl-f", f"n-{n}")
    while (await next_event(first))[1].get("node", {}).get("node_id") != "n-2":
        pass  # the hub keeps an event before it hands it out: from here the history has n-2
    first.close()
    await error_of(await api.get("/v1/clusters/cl-f/events", headers=bearer(BOB)), 404)
    kept = await api.get("/v1/clusters/cl-f/events", headers=bearer(ALICE))
    history = (await kept.json())["events"]
    assert [e["type"] for e in history] == ["cluster", "node", "node", "node"]
    last_two = await (await api.get("/v1/clusters/cl-f/events?limit=2", headers=bearer(ALICE))).json()
    assert last_two["events"] == history[-2:]

    stream = await api.get("/v1/clusters/cl-f/events?follow=true&limit=2", headers=bearer(ALICE))
    writer = asyncio.create_task(_write_nodes(store, "cl-f", range(3, 10)))
    seen: list[dict[str, Any]] = []
    while True:
        kind, data = await next_event(stream)
        if kind == "ready":
            continue
        seen.append(data)
        if kind == "node" and data["node"]["node_id"] == "n-9":
            break
    await writer
    stream.close()
    everything = (await (await api.get("/v1/clusters/cl-f/events", headers=bearer(ALICE))).json())["events"]
    assert seen == everything[-(len(everything) - 2) :]
    assert [e["node"]["node_id"] for e in seen] == [f"n-{n}" for n in range(1, 10)]

    recent = await api.get("/v1/clusters/cl-f/events?since=1h", headers=bearer(ALICE))
    assert len((await recent.json())["events"]) == len(everything)
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    later = await api.get(f"/v1/clusters/cl-f/events?since={future}", headers=bearer(ALICE))
    assert (await later.json())["events"] == []
    for query, field in (("since=yesterday", "since"), ("limit=0", "limit"), ("follow=maybe", "follow")):
        error = await error_of(await api.get(f"/v1/clusters/cl-f/events?{query}", headers=bearer(ALICE)), 400)
        assert error["field"] == field, error


class RacingLog(EventLog):
    """A history whose first read is overtaken by a change: it is both in what the read returns
    and on the stream's queue, the overlap the stream must not show twice."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.raced = asyncio.Event()

    async def record(self, events: list[Any], revision: int, cursor: bool = True) -> None:
        await super().record(events, revision, cursor)
        if any(e.kind == "node" and e.data["node"]["node_id"] == "n-race" for e in events):
            self.raced.set()

    async def read(
        self, cluster_id: str, since: float | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        if not self.raced.is_set():
            await put_node(self.store, cluster_id, "n-race")
            await asyncio.wait_for(self.raced.wait(), 30)
        return await super().read(cluster_id, since, limit)


async def test_an_event_both_kept_and_queued_is_streamed_once(api: Client, store: Store) -> None:
    api.server.app[EVENTS].history = RacingLog(store)
    await put_cluster(store, "cl-r")
    stream = await api.get("/v1/clusters/cl-r/events?follow=true&limit=1", headers=bearer(ALICE))
    assert (await next_event(stream))[1]["node"]["node_id"] == "n-race"
    assert (await next_event(stream))[0] == "ready"
    await put_node(store, "cl-r", "n-after")
    assert (await next_event(stream))[1]["node"]["node_id"] == "n-after"
    stream.close()


async def _write_nodes(store: Store, cid: str, numbers: range) -> None:
    for n in numbers:
        await put_node(store, cid, f"n-{n}")


def test_since_takes_durations_and_rfc3339_times() -> None:
    assert parse_since("10m", 1000.0) == 400.0
    assert parse_since("2h", 10_000.0) == 2800.0
    assert parse_since("2026-01-01T00:00:00Z", 0) == 1767225600.0
    for bad in ("10", "2026-01-01T00:00:00", "ten minutes"):
        try:
            parse_since(bad, 0)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was taken")
