"""Two owners at once: each gets its own metadata cluster, and neither sees the other's clusters.

Instances are identified by metad from their source address (the plain-HTTP mode), so the test
asks metad's instance API from a node's own loopback address, exactly as its agent would.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from e2e_cloud import Cloud, demo_app
from e2e_daemons import live
from test_lifecycle import expect

from pitrix.runtime.metadata import METADATA_IMAGE, metadata_name
from pitrix.runtime.service import RuntimeService

pytestmark = pytest.mark.e2e
INSTANCE_PORT = 8080


async def ask_metad(metad_ip: str, node_ip: str, path: str = "/self") -> tuple[int, Any]:
    """GET ``path`` from metad's instance API, sent from ``node_ip`` as that node's agent would."""
    connector = aiohttp.TCPConnector(local_addr=(node_ip, 0))
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
        http.get(f"http://{metad_ip}:{INSTANCE_PORT}{path}", headers={"Accept": "application/json"}) as r,
    ):
        return r.status, await r.json(content_type=None)


async def metad_ip(service: RuntimeService, owner: str) -> str:
    record = await service.metadata.get(owner, "sim")
    assert record is not None and record.ip
    return record.ip


async def node_ip(service: RuntimeService, cid: str) -> str:
    return next(n.ip for n in await service.nodes(cid) if n.ip)


async def metadata_vms(cloud: Cloud) -> list[str]:
    return sorted(vm["name"] for vm in live(await cloud.ledger()) if vm["image"] == METADATA_IMAGE)


async def test_two_owners_each_get_their_own_metadata_cluster_and_see_only_their_own(cloud: Cloud) -> None:
    service = cloud.service
    counts = {"web": 1, "lb": 0}
    created = await asyncio.gather(
        service.create_cluster(owner="alice", runtime="sim", app=demo_app(), counts=counts),
        service.create_cluster(owner="alice", runtime="sim", app=demo_app(), counts=counts),
        service.create_cluster(owner="bob", runtime="sim", app=demo_app(), counts=counts),
    )
    a1, a2, b = (cluster.id for cluster, _ in created)
    for cid in (a1, a2, b):
        await expect(service, cid, "active")
    assert await metadata_vms(cloud) == sorted([metadata_name("alice", "sim"), metadata_name("bob", "sim")])

    alice_metad, bob_metad = await metad_ip(service, "alice"), await metad_ip(service, "bob")
    assert alice_metad != bob_metad
    a1_node, b_node = await node_ip(service, a1), await node_ip(service, b)
    status, view = await ask_metad(alice_metad, a1_node)
    assert status == 200, view
    text = json.dumps(view)
    assert a1 in text and a2 not in text and b not in text  # its own cluster only, not even alice's other
    status, view = await ask_metad(bob_metad, b_node)
    assert status == 200 and b in json.dumps(view) and a1 not in json.dumps(view), view
    # Bob's metad does not know alice's node at all: it is refused, not shown bob's data.
    status, refused = await ask_metad(bob_metad, a1_node)
    assert status == 403, refused
    assert b not in json.dumps(refused)

    await service.delete_cluster(a1)
    await expect(service, a1, "deleted")
    assert metadata_name("alice", "sim") in await metadata_vms(cloud)  # a2 still needs it
    await service.delete_cluster(a2)
    await expect(service, a2, "deleted")
    assert await metadata_vms(cloud) == [metadata_name("bob", "sim")]
    assert await service.metadata.get("alice", "sim") is None
    status, view = await ask_metad(bob_metad, b_node)  # bob's cluster is untouched
    assert status == 200 and b in json.dumps(view)
    assert (await service.get_cluster(b)).state == "active"
    await service.delete_cluster(b)
    await expect(service, b, "deleted")
    assert await cloud.live_names() == []
