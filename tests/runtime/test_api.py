"""The admin API over a real etcd: answers, and clear 4xx errors that change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from dead_cloud import DEAD_CLOUD

from pitrix.api.app import create_app
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.service import RuntimeService
from pitrix.sealing import Sealer
from pitrix.store import Store

APP = {"name": "demo", "roles": [{"name": "web", "count": 1, "image": "demo"}]}


@pytest.fixture
async def api(store: Store) -> AsyncIterator[TestClient[Any, Any]]:
    # DEAD_CLOUD's refused connections are retryable: fail them after one quick retry, not 17 s.
    service = RuntimeService(
        store, retry=RetryPolicy(attempts=2, first_delay=0.05, max_delay=0.1), sealer=Sealer.generate()
    )
    await service.start()
    client = TestClient(TestServer(create_app(service), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await service.stop()


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    return body["error"]


async def test_healthz(api: TestClient[Any, Any]) -> None:
    response = await api.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_runtime_credentials_are_never_echoed(api: TestClient[Any, Any]) -> None:
    response = await api.post("/v1/runtimes", json=DEAD_CLOUD)
    assert response.status == 201
    assert "very-secret" not in await response.text()
    listing = await (await api.get("/v1/runtimes")).text()
    assert "very-secret" not in listing and "dead" in listing


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**DEAD_CLOUD, "provider": "nimbus"}, None),
        ({**DEAD_CLOUD, "name": "Bad Name"}, "name"),
        ({"provider": "qingcloud"}, "name"),
        ({**DEAD_CLOUD, "placement": "per-galaxy"}, "placement"),
        ({**DEAD_CLOUD, "metadata_retention": "forever"}, "metadata_retention"),
        ({**DEAD_CLOUD, "heartbeat_interval": 0.1}, "heartbeat_interval"),
        ({**DEAD_CLOUD, "heartbeat_interval": "often"}, "heartbeat_interval"),
        ({**DEAD_CLOUD, "metadata_size": 2}, "metadata_size"),
        ({**DEAD_CLOUD, "metadata_size": 9}, "metadata_size"),
        ({**DEAD_CLOUD, "metadata_image": "two words"}, "metadata_image"),
    ],
)
async def test_bad_runtime_is_refused(
    api: TestClient[Any, Any], body: dict[str, Any], field: str | None
) -> None:
    error = await error_of(await api.post("/v1/runtimes", json=body), 400)
    if field:
        assert error["field"] == field
    else:
        assert "unknown provider 'nimbus'" in error["message"]


async def test_a_role_without_an_image_for_the_runtime_s_cloud_is_refused(api: TestClient[Any, Any]) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD)).status == 201
    app = {**APP, "roles": [{"name": "web", "image": {"aws": "ami-1", "openstack": "img-2"}}]}
    error = await error_of(await api.post("/v1/clusters", json={"runtime": "dead", "app": app}), 400)
    assert error["message"] == "app.roles.web.image: no image for provider 'qingcloud' (have aws, openstack)"
    assert (await (await api.get("/v1/clusters")).json())["clusters"] == []  # nothing was made


async def test_not_json_is_a_400(api: TestClient[Any, Any]) -> None:
    response = await api.post("/v1/clusters", data=b"{nope", headers={"Content-Type": "application/json"})
    error = await error_of(response, 400)
    assert error["field"] == "body"


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"app": APP}, "runtime", 400),
        ({"runtime": "dead"}, "app", 400),
        ({"runtime": "dead", "app": {**APP, "roles": []}}, "app.roles", 400),
        ({"runtime": "dead", "app": APP, "counts": {"db": 2}}, "counts.db", 400),
        ({"runtime": "dead", "app": APP, "channel": "telnet"}, "channel", 400),
        ({"runtime": "dead", "app": APP, "channel": 7}, "channel", 400),
        ({"runtime": "nowhere", "app": APP}, None, 404),
    ],
)
async def test_bad_cluster_requests_create_nothing(
    api: TestClient[Any, Any], body: dict[str, Any], field: str | None, status: int
) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD)).status == 201
    error = await error_of(await api.post("/v1/clusters", json=body), status)
    if field:
        assert error["field"] == field, error
    assert (await (await api.get("/v1/clusters?all=1")).json())["clusters"] == []


async def test_unknown_cluster_is_a_404(api: TestClient[Any, Any]) -> None:
    error = await error_of(await api.get("/v1/clusters/cl-nothere"), 404)
    assert "cl-nothere" in error["message"]
    await error_of(await api.delete("/v1/clusters/cl-nothere"), 404)


async def test_a_failed_create_is_recorded_and_refuses_scaling(api: TestClient[Any, Any]) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD)).status == 201
    response = await api.post("/v1/clusters", json={"runtime": "dead", "app": APP})
    assert response.status == 202
    created = await response.json()
    cid = created["cluster"]["id"]
    waited = await api.get(f"/v1/clusters/{cid}/wait", params={"timeout": "60"})
    view = await waited.json()
    assert view["state"] == "failed"
    assert "cannot connect" in view["last_error"]
    assert view["job"]["status"] == "failed"
    assert [s["status"] for s in view["job"]["steps"]] == ["failed"]
    error = await error_of(await api.post(f"/v1/clusters/{cid}/scale", json={"role": "web", "count": 2}), 409)
    assert "cannot scale out a cluster that is failed" in error["message"]
    error = await error_of(await api.post(f"/v1/clusters/{cid}/scale", json={"role": "db", "count": 2}), 400)
    assert error["field"] == "role"
    error = await error_of(await api.post(f"/v1/clusters/{cid}/scale", json={"role": "web"}), 400)
    assert error["field"] == "count"


async def test_wait_rejects_a_bad_timeout(api: TestClient[Any, Any]) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD)).status == 201
    cid = (await (await api.post("/v1/clusters", json={"runtime": "dead", "app": APP})).json())["cluster"][
        "id"
    ]
    error = await error_of(await api.get(f"/v1/clusters/{cid}/wait", params={"timeout": "soon"}), 400)
    assert error["field"] == "timeout"
