"""Channel ssh on an OpenStack runtime (the simulator's Nova): host keys pinned from the console.

Nova describes no host key; cloud-init prints it on the console, and pitrixd reads it there
(``os-getConsoleOutput``) before its first connection, for the agents' bootstrap and for the SSH
tunnel to metad alike. The same cluster is resized: Cinder grows its attached volumes online, Nova
resizes a stopped node whose agent comes back over SSH.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from e2e_cloud import Cloud, demo_app, simulated_cloud
from e2e_daemons import live
from test_ssh_channel import settled

from pitrix.cli.demo import Child
from pitrix.store import Store
from simulator.vm import USERDATA_PATH

pytestmark = pytest.mark.e2e
JOB_TIMEOUT = 180.0


def openstack_runtime(sim: Child, name: str = "os") -> dict[str, Any]:
    """The simulator as an OpenStack cloud (Keystone v3 + Nova), with metad reached over SSH."""
    ready = sim.ready
    return {
        "name": name,
        "provider": "openstack",
        "auth_url": f"{ready['url']}/identity/v3",
        "username": ready["access_key_id"],
        "password": ready["secret_access_key"],
        "project_name": "pitrix",
        "ssh_port": 2222,
        "metad_via_ssh": True,
        "metadata_size": 1,  # through SSH metad is one VM whatever the size; said here as the others say it
    }


@pytest.fixture
async def cloud(store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with simulated_cloud(store, tmp_path, runtime=openstack_runtime) as simulated:
        yield simulated


async def test_ssh_channel_on_openstack_pins_host_keys_from_the_console(cloud: Cloud) -> None:
    service = cloud.service
    app = demo_app()
    app["roles"][0]["volume"] = {"size": 10}  # Cinder volumes, grown online by the resize below
    cluster, _ = await service.create_cluster(
        owner="o1", runtime="os", app=app, counts={"web": 1, "lb": 1}, channel="ssh"
    )
    cid = cluster.id
    await settled(service, cid, "active")
    nodes = await service.nodes(cid)
    provider = await service.provider_for("os")
    record = await service.metadata.get("o1", "os")
    assert record is not None
    ids = [n.instance_id for n in nodes] + [record.instance_id]
    servers = await provider.describe_instances(instance_ids=ids)
    assert len(servers) == len(nodes) + 1
    for server in servers:
        assert "ssh_host_key" not in server.raw  # Nova's description has none: the console's was pinned
        assert server.raw["key_name"] == "pitrix-o1-os"
    for node in nodes:  # no userdata: the agent's files came over SSH
        assert not (cloud.workdir / "sim/vms" / node.instance_id / "root" / USERDATA_PATH).exists()
        assert 'backend = "metad"' in cloud.vm_file(node.instance_id, "/etc/pitrix/agent.toml")
    # metad's management port is reached through the tunnel over the metadata VM's SSH.
    client = service.metadata.client(record)
    assert client.base_url.startswith(("https://127.0.0.1:", "http://127.0.0.1:")), client.base_url
    assert await client.healthz()
    lb = next(n for n in nodes if n.role == "lb")
    async with cloud.http.get(f"http://{lb.ip}:8000/") as response:
        assert response.status == 200

    await service.scale(cid, "web", 2)  # a second bootstrap, on the new node only
    await settled(service, cid, "active")
    assert len([n for n in await service.nodes(cid) if n.role == "web"]) == 2

    # resize: the web volumes grow online (Cinder extends attached volumes: no stop), the lb is
    # stopped, resized by Nova (resize, confirmResize) and started, its agent pushed again over SSH.
    job = await service.act(cid, "resize", {"roles": {"web": {"volume_size": 20}, "lb": {"cpu": 2}}})
    await settled(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "successful"
    steps = {s.name: s for s in await service.job_steps(cid, job.id)}
    assert "stop on" not in steps["resize:web:batch-1"].detail, steps["resize:web:batch-1"].detail
    assert "stop on 1 nodes" in steps["resize:lb:batch-1"].detail
    for node in await service.nodes(cid):
        if node.role == "web":
            assert cloud.vm_file(node.instance_id, "sys/block/vdb/size").strip() == str(20 * 1024**3 // 512)
        else:
            assert cloud.vm_file(node.instance_id, "proc/cpuinfo").count("processor") == 2
    async with cloud.http.get(f"http://{lb.ip}:8000/") as response:
        assert response.status == 200

    await service.delete_cluster(cid)
    await settled(service, cid, "deleted")
    names = {vm["name"] for vm in live(await cloud.ledger())}
    assert not any(cid in name for name in names)
