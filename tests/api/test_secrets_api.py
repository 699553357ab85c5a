"""Secrets through the admin API: sealed in etcd as stored, never in a view or an event stream.

Each test reads the raw etcd keys behind the API through the store, as a reader of etcd would.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, DEAD_CLOUD, bearer, next_event

from pitrix.runtime.keys import cluster_key, runtime_key
from pitrix.runtime.service import RuntimeService
from pitrix.sealing import REDACTED, Sealer, is_sealed
from pitrix.store import Store

Client = TestClient[Any, Any]
PASSWORD = "default-pw-6f1c2b"  # the spec's default of a password parameter
APP = {
    "name": "vault",
    "version": "1.0",
    "roles": [
        {
            "name": "web",
            "count": 1,
            "image": "demo",
            "env": {"admin_password": {"type": "password", "default": PASSWORD}, "port": 8080},
        }
    ],
}


async def everything(store: Store) -> bytes:
    """Every key and value under the test's prefix, as one blob to search."""
    kvs, _ = await store.get_prefix("")
    return b"\n".join(kv.key.encode() + b"=" + kv.value for kv in kvs)


async def test_runtime_credentials_are_sealed_and_never_shown(
    api: Client, store: Store, service: RuntimeService, sealer: Sealer
) -> None:
    response = await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))
    assert response.status == 201
    shown = await response.json()
    assert "secret_access_key" not in shown and "access_key_id" not in shown
    kv = await store.get(runtime_key("dead"))
    assert kv is not None
    stored = json.loads(kv.value)
    assert is_sealed(stored["secret_access_key"]) and is_sealed(stored["access_key_id"])
    assert stored["endpoint"] == DEAD_CLOUD["endpoint"]  # only credentials are sealed
    assert b"very-secret" not in await everything(store)
    for path in ("/v1/runtimes/dead", "/v1/runtimes"):
        body = await (await api.get(path, headers=bearer(ADMIN))).text()
        assert "very-secret" not in body and "pitrix-sealed" not in body
    # The provider still gets the real values.
    runtime = await service.get_runtime("dead")
    assert runtime.model_dump()["secret_access_key"] == "very-secret"


async def test_a_runtime_stored_in_clear_is_read_and_sealed_in_place(
    api: Client, store: Store, service: RuntimeService
) -> None:
    await store.put(runtime_key("dead"), json.dumps(DEAD_CLOUD))  # as an older pitrixd wrote it
    body = await (await api.get("/v1/runtimes/dead", headers=bearer(ADMIN))).json()
    assert body["name"] == "dead" and "secret_access_key" not in body
    kv = await store.get(runtime_key("dead"))
    assert kv is not None and b"very-secret" not in kv.value
    assert (await service.get_runtime("dead")).model_dump()["secret_access_key"] == "very-secret"


async def test_a_password_default_is_sealed_and_shown_as_stars(api: Client, store: Store) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    stream = await api.get("/v1/events", headers=bearer(ALICE))
    assert stream.status == 200
    kind, _ = await next_event(stream)
    assert kind == "ready"
    response = await api.post("/v1/clusters", json={"runtime": "dead", "app": APP}, headers=bearer(ALICE))
    assert response.status == 202
    created = await response.json()
    cid = created["cluster"]["id"]
    assert created["cluster"]["env"] == {"web": {"admin_password": REDACTED}}

    # Follow the create on the dead cloud to its failure: no event carries the password.
    while True:
        kind, data = await next_event(stream)
        assert PASSWORD not in json.dumps(data) and "pitrix-sealed" not in json.dumps(data), data
        if kind == "cluster":
            assert data["cluster"]["env"] == {"web": {"admin_password": REDACTED}}
            if data["cluster"]["state"] == "failed":
                break
    stream.close()

    shown = await (await api.get(f"/v1/clusters/{cid}", headers=bearer(ALICE))).text()
    listed = await (await api.get("/v1/clusters", headers=bearer(ALICE))).text()
    jobs = await (await api.get(f"/v1/clusters/{cid}/jobs", headers=bearer(ALICE))).text()
    for body in (shown, listed, jobs):
        assert PASSWORD not in body and "pitrix-sealed" not in body
    assert json.loads(shown)["env"]["web"] == {"admin_password": REDACTED}

    kv = await store.get(cluster_key(cid))
    assert kv is not None
    record = json.loads(kv.value)
    assert is_sealed(record["env"]["web"]["admin_password"])
    assert record["app"]["roles"][0]["env"]["admin_password"]["default"] is None  # moved out of the spec
    assert PASSWORD.encode() not in await everything(store)
