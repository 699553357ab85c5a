"""The SSH fallback on light-mode VMs: a silent agent's command runs in the VM's light shell.

A light VM's SSH runs the simulator's in-process shell, not ``sh``: a service command it knows
(the light app's ``true``) runs there and is recorded as the agent's result would be.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_cloud import Cloud
from e2e_daemons import live
from test_ssh_channel import app_for, settled, simulated

from pitrix.runtime.agents import AgentStatus
from pitrix.store import Store

pytestmark = pytest.mark.e2e


@pytest.fixture
async def light_cloud(store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with simulated(store, tmp_path, True) as cloud:
        yield cloud


async def test_a_cut_light_agent_s_command_runs_in_its_light_shell(light_cloud: Cloud) -> None:
    cloud, service = light_cloud, light_cloud.service
    cluster, _ = await service.create_cluster(
        owner="o1", runtime="sim", app=app_for(True), counts={"web": 2, "lb": 1}, channel="ssh"
    )
    cid = cluster.id
    await settled(service, cid, "active")
    web1 = next(n for n in await service.nodes(cid) if n.node_id == "web-1")
    record = await service.metadata.get("o1", "sim")
    assert record is not None
    client = service.metadata.client(record)
    async with cloud.http.post(f"{cloud.sim_url}/_sim/instances/{web1.instance_id}/cut") as response:
        assert response.status == 200 and (await response.json())["agents"] == 1
    agents = AgentStatus(client, cid)
    await agents.start()
    try:  # the view replayed (the agent's applied report is in it), then the heartbeat's lease ran out
        await agents.wait_for(lambda _: bool(agents.applied(web1.instance_id)), 60)
        await agents.wait_for(lambda _: not agents.has_heartbeat(web1.instance_id), 60)
    finally:
        await agents.close()

    job = await service.stop_cluster(cid)
    await settled(service, cid, "stopped")
    command_id = f"{job.id}-stop-web-1"
    result = json.loads(await client.get_data(f"/_pitrix/status/{cid}/{web1.instance_id}/cmd/{command_id}"))
    assert result["via"] == "ssh" and result["status"] == "successful" and result["exit_code"] == 0
    web2 = next(n for n in await service.nodes(cid) if n.node_id == "web-2")
    other = json.loads(
        await client.get_data(f"/_pitrix/status/{cid}/{web2.instance_id}/cmd/{job.id}-stop-web-2")
    )
    assert "via" not in other and other["status"] == "successful"  # a live agent ran its own

    await service.delete_cluster(cid)
    await settled(service, cid, "deleted")
    assert live(await cloud.ledger()) == []
