"""The SSH fallback on light-mode VMs: a silent agent's command runs in the VM's light shell.

A light VM's SSH runs the simulator's in-process shell, not ``sh``: a service command it knows
(the light app's ``true``) runs there and is recorded as the agent's result would be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
from e2e_cloud import Cloud
from e2e_daemons import live
from test_ssh_channel import app_for, settled, simulated, stop_with_web1_silent

from pitrix.runtime.keys import role_key_key
from pitrix.sealing import get_sealed
from pitrix.store import Store

pytestmark = pytest.mark.e2e


@pytest.fixture
async def light_cloud(store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with simulated(store, tmp_path, True) as cloud:
        yield cloud


async def test_a_cut_light_agent_s_command_runs_in_its_light_shell(light_cloud: Cloud) -> None:
    cloud, service = light_cloud, light_cloud.service
    app = app_for(True)
    app["roles"][0]["passphraseless"] = "ssh-rsa"  # type: ignore[index]  # web's nodes share a key pair
    cluster, _ = await service.create_cluster(
        owner="o1", runtime="sim", app=app, counts={"web": 2, "lb": 1}, channel="ssh"
    )
    cid = cluster.id
    await settled(service, cid, "active")
    await passphraseless_pair_pushed(cloud, cid)
    web1 = next(n for n in await service.nodes(cid) if n.node_id == "web-1")
    record = await service.metadata.get("o1", "sim")
    assert record is not None
    client = service.metadata.client(record)
    async with cloud.http.post(f"{cloud.sim_url}/_sim/instances/{web1.instance_id}/cut") as response:
        assert response.status == 200 and (await response.json())["agents"] == 1
    await stop_with_web1_silent(service, client, cid, web1)

    await service.delete_cluster(cid)
    await settled(service, cid, "deleted")
    assert live(await cloud.ledger()) == []


async def passphraseless_pair_pushed(cloud: Cloud, cid: str) -> None:
    """Over SSH (the light shell's touch, chmod, cat >>): each web node holds the role's one pair
    and authorizes its public key once; lb, not passphraseless, holds none."""
    sealer = cloud.service.sealer
    pem = await get_sealed(cloud.service.store, role_key_key(cid, "web"), sealer)
    assert pem is not None
    public = asyncssh.import_private_key(pem).export_public_key("openssh").decode().strip()
    for node in await cloud.service.nodes(cid):
        if node.role != "web":
            with pytest.raises(FileNotFoundError):
                cloud.vm_file(node.instance_id, "/root/.ssh/id_rsa.pub")
            continue
        assert cloud.vm_file(node.instance_id, "/root/.ssh/id_rsa.pub") == public + "\n"
        assert cloud.vm_file(node.instance_id, "/root/.ssh/id_rsa").encode() == pem
        assert cloud.vm_file(node.instance_id, "/root/.ssh/authorized_keys").splitlines().count(public) == 1
