"""Probes, metrics, the served OpenAPI document, the app catalog and the runtime actions."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, APP, BOB, DEAD_CLOUD, bearer, error_of, next_event

from pitrix.api.app import EVENTS
from pitrix.api.openapi import openapi_document

Client = TestClient[Any, Any]


async def test_readyz_follows_the_event_watch(api: Client) -> None:
    response = await api.get("/readyz")
    assert response.status == 200
    assert (await response.json())["checks"] == {"etcd": "ok", "events": "ok"}
    await api.server.app[EVENTS].close()
    response = await api.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"]["events"] == "not running"


async def test_openapi_is_served_and_lists_every_route(api: Client) -> None:
    served = await (await api.get("/openapi.json")).json()
    assert served == openapi_document()
    documented = {
        (method.upper(), path)
        for path, item in served["paths"].items()
        for method in item
        if method != "parameters"
    }
    routes = {
        (route.method, route.resource.canonical)
        for route in api.server.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert routes == documented


async def test_metrics_count_clusters_steps_and_cloud_errors(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    stream = await api.get("/v1/events", headers=bearer(ALICE))
    response = await api.post("/v1/clusters", json={"runtime": "dead", "app": APP}, headers=bearer(ALICE))
    cid = (await response.json())["cluster"]["id"]
    while True:  # until the dead cloud has failed the create
        kind, data = await next_event(stream)
        if kind == "cluster" and data["cluster_id"] == cid and data["cluster"]["state"] == "failed":
            break
    stream.close()
    text = await (await api.get("/metrics", headers=bearer(ADMIN))).text()
    assert 'pitrix_clusters{state="failed"}' in text
    assert 'pitrix_step_duration_seconds_count{status="failed",step="metadata"} 1.0' in text
    assert 'pitrix_cloud_call_errors_total{step="metadata"} 1.0' in text
    assert "pitrix_watch_lag_seconds " in text
    assert 'python_gc_collections_total{generation="2"}' in text
    assert "process_resident_memory_bytes " in text
    failed = next(line for line in text.splitlines() if line.startswith('pitrix_clusters{state="failed"}'))
    assert float(failed.split()[-1]) >= 1


async def test_apps_register_list_show_and_create_from_the_catalog(api: Client) -> None:
    response = await api.post("/v1/apps", json=APP, headers=bearer(ALICE))
    assert response.status == 201
    assert (await response.json())["owner"] == "alice"
    # The same spec again is fine (scripts re-run); another spec under the same version is not.
    assert (await api.post("/v1/apps", json=APP, headers=bearer(ALICE))).status == 200
    changed = {**APP, "roles": [{"name": "web", "count": 2, "image": "demo"}]}
    error = await error_of(await api.post("/v1/apps", json=changed, headers=bearer(ALICE)), 409)
    assert "another spec" in error["message"]
    newer = {**changed, "version": "1.1"}
    assert (await api.post("/v1/apps", json=newer, headers=bearer(ALICE))).status == 201

    listing = await (await api.get("/v1/apps", headers=bearer(ALICE))).json()
    assert [(a["name"], a["version"]) for a in listing["apps"]] == [("demo", "1.1")]
    shown = await (await api.get("/v1/apps/demo", headers=bearer(ALICE))).json()
    assert shown["versions"] == ["1.0", "1.1"] and shown["spec"]["roles"][0]["count"] == 2
    old = await (await api.get("/v1/apps/demo?version=1.0", headers=bearer(ALICE))).json()
    assert old["spec"]["roles"][0]["count"] == 1
    await error_of(await api.get("/v1/apps/nope", headers=bearer(ALICE)), 404)
    await error_of(await api.get("/v1/apps/demo?version=9", headers=bearer(ALICE)), 404)

    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    body = {"runtime": "dead", "app": "demo@1.0"}
    created = await (await api.post("/v1/clusters", json=body, headers=bearer(ALICE))).json()
    assert created["cluster"]["app"] == {"name": "demo", "version": "1.0"}
    assert created["cluster"]["counts"] == {"web": 1}
    latest = await (
        await api.post("/v1/clusters", json={"runtime": "dead", "app": "demo"}, headers=bearer(ALICE))
    ).json()
    assert latest["cluster"]["counts"] == {"web": 2}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name", "roles": [{"name": "web", "image": "x"}]}, "name"),
        ({"name": "ok", "version": "1/2", "roles": [{"name": "web", "image": "x"}]}, "version"),
        ({"name": "ok", "roles": []}, "roles"),
        ([1, 2], "body"),
    ],
)
async def test_bad_app_is_refused_naming_the_field(api: Client, body: Any, field: str) -> None:
    error = await error_of(await api.post("/v1/apps", json=body, headers=bearer(ALICE)), 400)
    assert error["field"] == field


async def test_cluster_list_filters(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    body = {"runtime": "dead", "app": APP, "name": "filtered"}
    cid = (await (await api.post("/v1/clusters", json=body, headers=bearer(ALICE))).json())["cluster"]["id"]

    async def ids(query: str) -> list[str]:
        data = await (await api.get(f"/v1/clusters?{query}", headers=bearer(ALICE))).json()
        return [c["id"] for c in data["clusters"]]

    assert cid in await ids("app=demo&runtime=dead")
    assert cid not in await ids("app=other")
    assert cid not in await ids("runtime=elsewhere")
    error = await error_of(await api.get("/v1/clusters?state=sleepy", headers=bearer(ALICE)), 400)
    assert error["field"] == "state"
    await error_of(await api.get("/v1/clusters?all=maybe", headers=bearer(ALICE)), 400)


async def test_actions_reach_the_runtime_and_keep_their_errors(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    body = {"runtime": "dead", "app": APP}
    cid = (await (await api.post("/v1/clusters", json=body, headers=bearer(ALICE))).json())["cluster"]["id"]
    # A creating (or failed) cluster cannot be stopped or started: the machine says so, as a 409.
    for action in ("stop", "start"):
        error = await error_of(await api.post(f"/v1/clusters/{cid}/{action}", headers=bearer(ALICE)), 409)
        assert error["code"] == "conflict"
    error = await error_of(
        await api.post(f"/v1/clusters/{cid}/env", json={"env": []}, headers=bearer(ALICE)), 400
    )
    assert error["field"] == "env"
    error = await error_of(
        await api.post(f"/v1/clusters/{cid}/env", json={"env": {"db": {"x": 1}}}, headers=bearer(ALICE)), 400
    )
    assert error["field"] == "env.db"
    await error_of(await api.post(f"/v1/clusters/{cid}/stop", headers=bearer(BOB)), 404)
    jobs = await (await api.get(f"/v1/clusters/{cid}/jobs", headers=bearer(ALICE))).json()
    assert [j["action"] for j in jobs["jobs"]] == ["create"]


async def test_method_not_allowed_is_json_and_says_allow(api: Client) -> None:
    response = await api.put("/v1/clusters", headers=bearer(ALICE))
    error = await error_of(response, 405)
    assert error["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


async def test_a_store_failure_is_a_503_not_a_500() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from pitrix.api.errors import errors_middleware
    from pitrix.store import StoreError

    async def failing(request: web.Request) -> web.Response:
        raise StoreError("etcdserver: requested lease not found")

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/", failing)
    client: Client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        error = await error_of(await client.get("/"), 503)
        assert error["code"] == "unavailable" and "lease not found" in error["message"]
    finally:
        await client.close()
