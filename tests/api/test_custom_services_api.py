"""``POST /v1/clusters/{cid}/service`` over a real RuntimeService and etcd, on a dead cloud.

Bad requests are 4xx naming the field and change nothing; an accepted one shows its password
parameter as ``******`` in every answer and event, and keeps it sealed in etcd. On the dead cloud
the job cannot reach the nodes, and its failure leaves the cluster ``active``, not ``failed``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, BOB, DEAD_CLOUD, bearer, error_of, next_event, put_data_cluster

from pitrix.sealing import REDACTED
from pitrix.store import Store

Client = TestClient[Any, Any]
PASSWORD = "pw-9c1e77d0"
APP = {
    "name": "kv",
    "roles": [
        {
            "name": "data",
            "count": 2,
            "image": "x",
            "custom_services": {
                "backup": {
                    "cmd": "backup",
                    "description": "copy the data away",
                    "params": {
                        "level": {"type": "integer", "default": 1, "max": 9},
                        "key": {"type": "password"},
                    },
                }
            },
        }
    ],
}


async def active_cluster(store: Store, state: str = "active") -> str:
    """A cluster of alice's on the dead cloud, as a finished create would have left it."""
    return await put_data_cluster(store, "cl-svc1", APP, state=state)


async def everything(store: Store) -> bytes:
    kvs, _ = await store.get_prefix("")
    return b"\n".join(kv.key.encode() + b"=" + kv.value for kv in kvs)


async def test_bad_service_requests_are_4xx_naming_the_field(api: Client, store: Store) -> None:
    cid = await active_cluster(store)
    url = f"/v1/clusters/{cid}/service"
    for body, field, words in [
        ({}, "name", "required"),
        ({"name": "restore"}, "name", "no custom service 'restore' (has backup)"),
        ({"name": "backup", "params": {"level": 10}}, "params.level", "10 is above the maximum 9"),
        ({"name": "backup", "params": {"speed": 1}}, "params.speed", "has no parameter 'speed'"),
        ({"name": "backup", "nodes": ["data-3"]}, "nodes", "no running node 'data-3'"),
        ({"name": "backup", "roles": ["web"]}, "roles", "no role 'web'"),
        ({"name": "backup", "force": True}, "force", "unknown field"),
    ]:
        error = await error_of(await api.post(url, json=body, headers=bearer(ALICE)), 400)
        assert error["field"] == field and words in error["message"], (body, error)
    assert (await api.post(url, json={"name": "backup"}, headers=bearer(BOB))).status == 404
    shown = await (await api.get(f"/v1/clusters/{cid}", headers=bearer(ALICE))).json()
    assert (shown["state"], shown["job_id"]) == ("active", None)
    assert shown["custom_services"] == {
        "backup": {
            "roles": ["data"],
            "description": "copy the data away",
            "params": {
                "level": {
                    "type": "integer",
                    "default": 1,
                    "range": None,
                    "min": None,
                    "max": 9.0,
                    "description": "",
                    "pattern": None,
                    "required": False,
                    "multichoice": False,
                },
                "key": {
                    "type": "password",
                    "default": None,
                    "range": None,
                    "min": None,
                    "max": None,
                    "description": "",
                    "pattern": None,
                    "required": False,
                    "multichoice": False,
                },
            },
        }
    }


async def test_a_stopped_cluster_refuses_a_service(api: Client, store: Store) -> None:
    cid = await active_cluster(store, state="stopped")
    response = await api.post(f"/v1/clusters/{cid}/service", json={"name": "backup"}, headers=bearer(ALICE))
    error = await error_of(response, 409)
    assert "cannot service a cluster that is stopped" in error["message"]


async def test_a_password_parameter_is_sealed_and_a_failed_run_leaves_the_cluster_active(
    api: Client, store: Store
) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    cid = await active_cluster(store)
    stream = await api.get(f"/v1/clusters/{cid}/events?follow=true", headers=bearer(ALICE))
    assert stream.status == 200
    body = {"name": "backup", "params": {"key": PASSWORD, "level": 3}, "nodes": ["data-2"]}
    response = await api.post(f"/v1/clusters/{cid}/service", json=body, headers=bearer(ALICE))
    assert response.status == 202, await response.text()
    job = (await response.json())["job"]
    assert job["action"] == "service"
    assert job["args"] == {
        "name": "backup",
        "params": {"data": {"level": "3", "key": REDACTED}},
        "nodes": ["data-2"],
    }

    states = []
    while True:  # the dead cloud fails the job; no event carries the password
        kind, data = await next_event(stream)
        assert PASSWORD not in json.dumps(data) and "pitrix-sealed" not in json.dumps(data), data
        if kind == "cluster":
            states.append(data["cluster"]["state"])
            if data["cluster"]["state"] == "active" and "running_service" in states:
                break
    stream.close()
    assert "failed" not in states
    kept = await (await api.get(f"/v1/clusters/{cid}/events", headers=bearer(ALICE))).text()
    assert "running_service" in kept and PASSWORD not in kept and "pitrix-sealed" not in kept

    ended = await (await api.get(f"/v1/clusters/{cid}/jobs/{job['id']}", headers=bearer(ALICE))).json()
    assert ended["status"] == "failed" and ended["error"], ended
    assert ended["args"]["params"]["data"]["key"] == REDACTED
    shown = await (await api.get(f"/v1/clusters/{cid}", headers=bearer(ALICE))).json()
    assert shown["state"] == "active" and shown["last_error"] == ended["error"]
    assert PASSWORD.encode() not in await everything(store)
