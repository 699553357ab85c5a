"""Scale out and in on the simulator, over mutual TLS: the lb follows, leavers lose their identity.

The demo app's lb renders its upstreams from /self/hosts, so traffic through it shows the config
converged; a node scaled in is revoked at metad before its mapping goes, and its VM is terminated.
"""

from __future__ import annotations

import tomllib

import pytest
from e2e_cloud import Cloud, demo_app
from e2e_daemons import runtime_definition
from test_lifecycle import expect, lb_ip, through_lb

pytestmark = pytest.mark.e2e


async def test_scale_out_then_in_over_mutual_tls(cloud: Cloud) -> None:
    service = cloud.service
    # The runtime's heartbeat interval goes into each agent's config.
    sim = runtime_definition(cloud.sim)
    await service.put_runtime({**sim, "heartbeat_interval": 1.5})
    cluster, _ = await service.create_cluster(
        owner="o1", runtime="sim", app=demo_app(), counts={"web": 1, "lb": 1}
    )
    cid = cluster.id
    await expect(service, cid, "active")
    record = await service.metadata.get("o1", "sim")
    assert record is not None and record.manage_url.startswith("https://")
    nodes = {n.node_id: n for n in await service.nodes(cid)}
    config = tomllib.loads(cloud.vm_file(nodes["web-1"].instance_id, "/etc/pitrix/agent.toml"))
    assert config["nodes"] == [record.instance_url] and config["client_cert"] == "/etc/pitrix/agent.crt"
    assert config["pitrix"]["heartbeat_interval"] == 1.5
    assert "BEGIN CERTIFICATE" in cloud.vm_file(nodes["web-1"].instance_id, "/etc/pitrix/agent.crt")
    assert set(await through_lb(cloud.http, await lb_ip(service, cid))) == {"web-1"}

    await service.scale(cid, "web", 3)
    await expect(service, cid, "active")
    assert set(await through_lb(cloud.http, await lb_ip(service, cid), 18)) == {"web-1", "web-2", "web-3"}
    client = service.metadata.client(record)
    assert await client.get_data(f"/clusters/{cid}/adding-hosts") is None
    grown = {n.node_id: n.instance_id for n in await service.nodes(cid)}

    await service.scale(cid, "web", 1)
    await expect(service, cid, "active")
    assert set(await through_lb(cloud.http, await lb_ip(service, cid))) == {"web-1"}
    left = {grown["web-2"], grown["web-3"]}
    revoked = await client.revoked()
    assert left <= set(revoked["instances"]) and grown["web-1"] not in revoked["instances"]
    for iid in left:
        assert await client.get_mapping(iid) is None
    assert await client.get_data(f"/clusters/{cid}/deleting-hosts") is None
    statuses = {vm["instance_id"]: vm["status"] for vm in await cloud.ledger()}
    assert {statuses[i] for i in left} == {"terminated"}

    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    assert await cloud.live_names() == []
