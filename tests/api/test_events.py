"""Server-sent events: a snapshot, then every stored change, only of the owner's own clusters."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, APP, BOB, DEAD_CLOUD, bearer, error_of, next_event

from pitrix.api.app import EVENTS

Client = TestClient[Any, Any]


async def create(api: Client, token: str) -> str:
    body = {"runtime": "dead", "app": APP}
    response = await api.post("/v1/clusters", json=body, headers=bearer(token))
    assert response.status == 202, await response.text()
    return str((await response.json())["cluster"]["id"])


async def until(response: Any, kind: str, match: Any = lambda d: True) -> dict[str, Any]:
    while True:
        event, data = await next_event(response)
        if event == kind and match(data):
            return data


async def test_owner_stream_shows_own_clusters_from_snapshot_to_failure(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    before = await create(api, ALICE)
    stream = await api.get("/v1/events", headers=bearer(ALICE))
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    snapshot = await until(stream, "cluster")
    assert snapshot["cluster_id"] == before and snapshot["cluster"]["owner"] == "alice"
    await until(stream, "ready")

    await create(api, BOB)
    mine = await create(api, ALICE)
    seen: list[tuple[str, str]] = []
    # The dead cloud fails the create at its first cloud step: the whole story arrives in order.
    while True:
        kind, data = await next_event(stream)
        assert data["cluster_id"] in (before, mine), data  # never bob's
        if data["cluster_id"] != mine:
            continue
        seen.append((kind, data.get("cluster", {}).get("state") or data.get("step", {}).get("status", "")))
        if kind == "cluster" and data["cluster"]["state"] == "failed":
            break
    assert seen[0] == ("cluster", "creating")
    assert ("step", "running") in seen and ("step", "failed") in seen
    assert seen.index(("step", "running")) < seen.index(("step", "failed"))
    stream.close()


async def test_cluster_stream_and_admin_stream(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    cid = await create(api, BOB)
    await error_of(await api.get(f"/v1/clusters/{cid}/events", headers=bearer(ALICE)), 404)

    one = await api.get(f"/v1/clusters/{cid}/events?follow=true", headers=bearer(BOB))
    everything = await api.get("/v1/events", headers=bearer(ADMIN))
    first = await until(one, "cluster")
    assert first["cluster_id"] == cid
    await until(everything, "cluster", lambda d: d["cluster_id"] == cid)

    # Browsers' EventSource cannot send headers: the token may come as a query parameter.
    by_query = await api.get(f"/v1/clusters/{cid}/events?access_token={BOB}&follow=true")
    assert by_query.status == 200
    await until(by_query, "ready")

    response = await api.post(f"/v1/clusters/{cid}/retry", headers=bearer(BOB))
    if response.status == 202:  # the create failed already: its retry shows up in both streams
        await until(one, "job", lambda d: d["job"]["status"] == "running")
        await until(everything, "job", lambda d: d["cluster_id"] == cid)
    else:
        await error_of(response, 409)
        await until(one, "cluster", lambda d: d["cluster"]["state"] == "failed")
    for stream in (one, everything, by_query):
        stream.close()


async def test_streams_end_when_the_server_stops(api: Client) -> None:
    stream = await api.get("/v1/events", headers=bearer(ADMIN))
    await until(stream, "ready")
    await api.server.app[EVENTS].close()
    try:
        await next_event(stream)
    except EOFError:
        pass
    else:
        raise AssertionError("the stream went on after the hub closed")
