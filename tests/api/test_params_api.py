"""Deploy-time parameters and delete's force through the admin API (a dead cloud: every create
fails at its first cloud call, which is all these need): 400s naming the field, and a password
given at create never shown raw by a view, a job, an event, or stored in etcd."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, DEAD_CLOUD, bearer, error_of, next_event

from pitrix.runtime.keys import cluster_key
from pitrix.runtime.params import CLUSTER_SCOPE
from pitrix.sealing import REDACTED, is_sealed
from pitrix.store import Store

Client = TestClient[Any, Any]
SECRET = "deploy-time-Pw-3d9a41"
APP = {
    "name": "shop",
    "version": "1.0",
    "env": {"admin_password": {"type": "password", "required": True}, "region": "eu"},
    "roles": [
        {
            "name": "web",
            "count": 1,
            "image": "demo",
            "env": {
                "port": {"type": "integer", "min": 1, "max": 65535, "default": 80},
                "token": {"type": "string", "changeable": False, "pattern": "[a-f0-9]{8}"},
            },
        }
    ],
}


async def everything(store: Store) -> bytes:
    kvs, _ = await store.get_prefix("")
    return b"\n".join(kv.key.encode() + b"=" + kv.value for kv in kvs)


async def create(api: Client, env: Any) -> Any:
    body = {"runtime": "dead", "app": APP, "env": env}
    return await api.post("/v1/clusters", json=body, headers=bearer(ALICE))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"admin_password": SECRET, "web": {"port": 70000}},
            "env.web.port: 70000 is above the maximum 65535",
        ),
        ({"admin_password": SECRET, "web": {"token": "XYZ"}}, "env.web.token: 'XYZ' does not match"),
        ({"web": {"port": 81}}, "env.admin_password: required (the app gives no default)"),
        ({"admin_password": SECRET, "db": {"x": 1}}, "env.db: the app has no role 'db'"),
        ({"admin_password": SECRET, "zone": "z"}, "env.zone: the app has no cluster-level parameter"),
        ([1], "env: must be an object"),
    ],
)
async def test_bad_deploy_time_values_are_400s_naming_the_field(
    api: Client, store: Store, env: Any, message: str
) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    error = await error_of(await create(api, env), 400)
    assert error["message"].startswith(message), error
    assert error["field"] == message.split(":")[0]
    clusters = await (await api.get("/v1/clusters", headers=bearer(ALICE))).json()
    assert clusters["clusters"] == []  # nothing was created


async def test_a_bad_password_is_refused_without_echoing_it(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    spec = json.loads(json.dumps(APP))
    spec["env"]["admin_password"]["range"] = ["one-allowed-pw"]
    response = await api.post(
        "/v1/clusters",
        json={"runtime": "dead", "app": spec, "env": {"admin_password": SECRET}},
        headers=bearer(ALICE),
    )
    text = await response.text()
    assert response.status == 400 and SECRET not in text and "env.admin_password" in text


async def test_deploy_time_values_are_kept_and_the_password_never_shown(api: Client, store: Store) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    stream = await api.get("/v1/events", headers=bearer(ALICE))
    assert (await next_event(stream))[0] == "ready"
    env = {"admin_password": SECRET, "region": "us", "web": {"port": 8080, "token": "0a1b2c3d"}}
    response = await create(api, env)
    text = await response.text()
    assert response.status == 202, text
    assert SECRET not in text
    created = json.loads(text)
    cid = created["cluster"]["id"]
    shown_env = {"admin_password": REDACTED, "region": "us", "web": {"port": "8080", "token": "0a1b2c3d"}}
    assert created["cluster"]["env"] == shown_env

    while True:  # the create fails on the dead cloud; no event on the way carries the password
        kind, data = await next_event(stream)
        assert SECRET not in json.dumps(data) and "pitrix-sealed" not in json.dumps(data), data
        if kind == "cluster" and data["cluster"]["state"] == "failed":
            assert data["cluster"]["env"] == shown_env
            break
    stream.close()

    for path in (f"/v1/clusters/{cid}", "/v1/clusters", f"/v1/clusters/{cid}/jobs"):
        body = await (await api.get(path, headers=bearer(ALICE))).text()
        assert SECRET not in body and "pitrix-sealed" not in body, path
    record = json.loads((await store.get(cluster_key(cid))).value)  # type: ignore[union-attr]
    assert is_sealed(record["env"][CLUSTER_SCOPE]["admin_password"])
    assert record["env"]["web"] == {"port": "8080", "token": "0a1b2c3d"}
    assert SECRET.encode() not in await everything(store)


async def test_delete_takes_force_from_the_body_or_the_query(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    created = await (await create(api, {"admin_password": SECRET})).json()
    cid = created["cluster"]["id"]
    wait = await api.get(
        f"/v1/clusters/{cid}/wait", params={"state": "failed", "timeout": "30"}, headers=bearer(ALICE)
    )
    assert wait.status == 200, await wait.text()
    for kwargs, field in (
        ({"json": {"force": "yes"}}, "force"),
        ({"json": {"forse": True}}, "forse"),
        ({"params": {"force": "maybe"}}, "force"),
    ):
        error = await error_of(await api.delete(f"/v1/clusters/{cid}", headers=bearer(ALICE), **kwargs), 400)
        assert error["field"] == field, error
    response = await api.delete(f"/v1/clusters/{cid}", json={"force": True}, headers=bearer(ALICE))
    assert response.status == 202, await response.text()
    job = (await response.json())["job"]
    assert job["action"] == "delete" and job["args"] == {"force": True, "was": "failed"}
