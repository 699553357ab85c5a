"""Tokens, an app spec, a dead cloud and a finished cluster's records shared by the admin API tests."""

from __future__ import annotations

from typing import Any

from pitrix.runtime.keys import cluster_key, node_key
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.spec import parse_spec
from pitrix.settings import TokenEntry
from pitrix.store import Store

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"
ADMIN = "admin-token-0123456789"
TOKENS = [
    TokenEntry(token=ALICE, owner="alice"),
    TokenEntry(token=BOB, owner="bob"),
    TokenEntry(token=ADMIN, owner="ops", admin=True),
]
APP = {"name": "demo", "version": "1.0", "roles": [{"name": "web", "count": 1, "image": "demo"}]}
DEAD_CLOUD = {
    "name": "dead",
    "provider": "qingcloud",
    "endpoint": "http://127.0.0.1:9",  # discard port: nothing listens, every call fails fast
    "zone": "z1",
    "access_key_id": "AK",
    "secret_access_key": "very-secret",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    return body["error"]


async def next_event(response: Any, timeout: float = 30.0) -> tuple[str, dict[str, Any]]:
    """The next server-sent event of ``response`` (keepalive comments skipped): (event, data)."""
    import asyncio
    import json

    async def read() -> tuple[str, dict[str, Any]]:
        kind, data = "", ""
        while True:
            raw = await response.content.readline()
            if not raw:
                raise EOFError("the event stream ended")
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
            elif line == "" and kind:
                return kind, json.loads(data)

    return await asyncio.wait_for(read(), timeout)


async def put_data_cluster(
    store: Store,
    cid: str,
    app: dict[str, Any],
    *,
    volumes: bool = False,
    node_status: str = "planned",
    **changes: Any,
) -> str:
    """Alice's cluster ``cid`` on the dead cloud with two nodes of role ``data`` (each with a
    volume when ``volumes``), as a finished create would have left its records; ``changes``
    are the cluster record's fields that differ (``state``, ``last_error``, ...)."""
    fields: dict[str, Any] = {"name": "kv", "owner": "alice", "runtime": "dead", "state": "active"}
    cluster = Cluster(id=cid, app=parse_spec(app), counts={"data": 2}, **(fields | changes))
    await store.put(cluster_key(cid), cluster.dump())
    for index in (1, 2):
        node = Node(
            node_id=f"data-{index}",
            role="data",
            index=index,
            name=f"{cid}-data-{index}",
            instance_id=f"i-d{index}",
            volume_id=f"vol-d{index}" if volumes else "",
            status=node_status,  # type: ignore[arg-type]
        )
        await store.put(node_key(cid, node.node_id), node.dump())
    return cid
