"""Two owners at once: each gets its own metadata cluster (or shares a trusted runtime's), and
neither sees the other's clusters.

The test asks metad's instance API as a node's agent would: from the node's own loopback address
and, when the metadata cluster speaks TLS, with the certificate and CA the agent holds on its VM.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from e2e_cloud import Cloud, demo_app
from e2e_daemons import live, runtime_definition
from test_lifecycle import expect

from pitrix import pki
from pitrix.runtime.metadata import METADATA_IMAGE, SHARED, metadata_name
from pitrix.runtime.service import InvalidRequest, RuntimeService
from pitrix.runtime.userdata import AGENT_CA, AGENT_CERT, AGENT_KEY

pytestmark = pytest.mark.e2e
INSTANCE_PORT = 8080


@dataclass(frozen=True)
class Metad:
    ip: str
    scheme: str


@dataclass(frozen=True)
class Agent:
    ip: str
    root: Path  # the VM's root: the agent's certificate, key and CA are under etc/pitrix


async def ask_metad(metad: Metad, agent: Agent, path: str = "/self") -> tuple[int, Any]:
    """GET ``path`` from metad's instance API as ``agent``: from its address, with its certificate."""
    tls: ssl.SSLContext | bool = False
    if metad.scheme == "https":
        tls = pki.client_context(*(agent.root / f.lstrip("/") for f in (AGENT_CA, AGENT_CERT, AGENT_KEY)))
    connector = aiohttp.TCPConnector(local_addr=(agent.ip, 0), ssl=tls)
    timeout = aiohttp.ClientTimeout(total=10)
    url = f"{metad.scheme}://{metad.ip}:{INSTANCE_PORT}{path}"
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
            http.get(url, headers={"Accept": "application/json"}) as r,
        ):
            return r.status, await r.json(content_type=None)
    except aiohttp.ClientConnectionError as exc:  # TLS refused: a certificate of another issuer
        return 0, str(exc)


async def metad_of(service: RuntimeService, owner: str, runtime: str = "sim") -> Metad:
    record = await service.metadata.get(owner, runtime)
    assert record is not None and record.ip
    return Metad(record.ip, record.scheme)


async def agent_of(cloud: Cloud, cid: str) -> Agent:
    node = next(n for n in await cloud.service.nodes(cid) if n.ip)
    return Agent(node.ip, cloud.workdir / "sim" / "vms" / node.instance_id / "root")


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

    alice_metad, bob_metad = await metad_of(service, "alice"), await metad_of(service, "bob")
    assert alice_metad.ip != bob_metad.ip
    a1_node, b_node = await agent_of(cloud, a1), await agent_of(cloud, b)
    status, view = await ask_metad(alice_metad, a1_node)
    assert status == 200, view
    text = json.dumps(view)
    assert a1 in text and a2 not in text and b not in text  # its own cluster only, not even alice's other
    status, view = await ask_metad(bob_metad, b_node)
    assert status == 200 and b in json.dumps(view) and a1 not in json.dumps(view), view
    # Bob's metad does not know alice's node at all: it is refused (403, or the TLS handshake fails
    # because alice's certificate comes from another issuer), never shown bob's data.
    status, refused = await ask_metad(bob_metad, a1_node)
    assert status in (0, 403), refused
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


async def test_a_per_runtime_placement_shares_one_metadata_cluster_and_still_isolates(cloud: Cloud) -> None:
    """A trusted runtime's owners share one metadata VM; each node still sees only its own cluster.

    Kept by policy when its clusters are gone, removed with the last one once the policy says so.
    """
    service = cloud.service
    shared = {
        **runtime_definition(cloud.sim, "shared"),
        "placement": "per-runtime",
        "metadata_retention": "keep",
    }
    await service.put_runtime(shared)
    counts = {"web": 1, "lb": 0}
    created = await asyncio.gather(
        service.create_cluster(owner="alice", runtime="shared", app=demo_app(), counts=counts),
        service.create_cluster(owner="bob", runtime="shared", app=demo_app(), counts=counts),
    )
    a, b = (cluster.id for cluster, _ in created)
    for cid in (a, b):
        await expect(service, cid, "active")
    assert await metadata_vms(cloud) == [metadata_name(SHARED, "shared")]
    metad = await metad_of(service, "alice", "shared")
    assert metad == await metad_of(service, "bob", "shared")
    for mine, theirs in ((a, b), (b, a)):
        status, view = await ask_metad(metad, await agent_of(cloud, mine))
        assert status == 200 and mine in json.dumps(view) and theirs not in json.dumps(view), view

    # The placement cannot move under living clusters: their agents know only this metad.
    with pytest.raises(InvalidRequest, match="placement: cannot change while runtime 'shared' has clusters"):
        await service.put_runtime({**shared, "placement": "per-owner"})

    for cid in (a, b):
        await service.delete_cluster(cid)
        await expect(service, cid, "deleted")
    assert await metadata_vms(cloud) == [metadata_name(SHARED, "shared")]  # kept: the policy says keep

    await service.put_runtime({**shared, "metadata_retention": "remove-when-unused"})
    again, _ = await service.create_cluster(owner="carol", runtime="shared", app=demo_app(), counts=counts)
    await expect(service, again.id, "active")
    assert await metadata_vms(cloud) == [metadata_name(SHARED, "shared")]  # reused, not made twice
    await service.delete_cluster(again.id)
    await expect(service, again.id, "deleted")
    assert await metadata_vms(cloud) == []
    assert await service.metadata.get("carol", "shared") is None
