"""Volumes end to end on the simulator: made, attached and mounted before ``init``, written by the
app, kept across stop and start in the simulator's own volume directory, replaced empty by a
recover, and deleted with their nodes (scale-in, delete): the simulator's ledger keeps no live one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from e2e_cloud import Cloud, simulated_cloud
from test_lifecycle import expect
from test_ssh_openstack import openstack_runtime

from pitrix.store import Store

pytestmark = pytest.mark.e2e

APP: dict[str, Any] = {
    "name": "vols",
    "roles": [
        {
            "name": "db",
            "count": 2,
            "image": "plain",
            "volume": {
                "size": 10,
                "mount_point": "/srv/db",
                "filesystem": "ext4",
                "mount_options": "noatime",
            },
            "services": {
                # Commands run in the VM's root: srv/db is the mount point, a volume by init already.
                "init": {"cmd": 'test -L srv/db && echo "$PITRIX_VM_ID" > srv/db/init'},
                "start": {"cmd": "echo started >> srv/db/starts"},
            },
        }
    ],
}


async def volume_ledger(cloud: Cloud) -> dict[str, dict[str, Any]]:
    async with cloud.http.get(f"{cloud.sim_url}/_sim/ledger") as response:
        assert response.status == 200
        return {v["volume_id"]: v for v in (await response.json())["volumes"]}


def data_dir(cloud: Cloud, volume_id: str) -> Path:
    return cloud.workdir / "sim" / "volumes" / volume_id / "data"


@pytest.mark.parametrize("channel", ["rest", "ssh"])
async def test_volumes_live_with_their_nodes(cloud: Cloud, channel: str) -> None:
    service = cloud.service
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=APP, counts={"db": 2}, channel=channel
    )
    cid = cluster.id
    await expect(service, cid, "active")
    nodes = {n.node_id: n for n in await service.nodes(cid)}
    ledger = await volume_ledger(cloud)
    for node in nodes.values():
        volume = ledger[node.volume_id]
        assert volume["name"] == f"{cid}-{node.node_id}-vol" and volume["size"] == 10
        assert volume["status"] == "in-use" and volume["instance_id"] == node.instance_id
        data = data_dir(cloud, node.volume_id)
        assert volume["path"] == str(data)
        # init ran on the mounted volume; start wrote through the mount point into the volume.
        assert (data / "init").read_text() == f"{node.instance_id}\n"
        assert (data / "starts").read_text() == "started\n"
        vm_root = cloud.workdir / "sim" / "vms" / node.instance_id / "root"
        assert (vm_root / "srv" / "db").resolve() == data.resolve()

    await service.stop_cluster(cid)
    await expect(service, cid, "stopped")
    await service.start_cluster(cid)
    await expect(service, cid, "active")
    for node in nodes.values():  # the same volumes, the first start's line still there
        assert (data_dir(cloud, node.volume_id) / "starts").read_text() == "started\nstarted\n"
        assert (await volume_ledger(cloud))[node.volume_id]["status"] == "in-use"

    # A replaced node starts on a new, empty volume; the old one is deleted.
    old = nodes["db-1"]
    await service.act(cid, "recover", {"nodes": ["db-1"]})
    await expect(service, cid, "active")
    [replaced] = [n for n in await service.nodes(cid) if n.node_id == "db-1"]
    assert replaced.volume_id and replaced.volume_id != old.volume_id
    assert (data_dir(cloud, replaced.volume_id) / "starts").read_text() == "started\n"
    ledger = await volume_ledger(cloud)
    assert ledger[old.volume_id]["status"] == "deleted" and not data_dir(cloud, old.volume_id).exists()

    await service.scale(cid, "db", 1)
    await expect(service, cid, "active")
    leaver = nodes["db-2"].volume_id
    ledger = await volume_ledger(cloud)
    assert ledger[leaver]["status"] == "deleted" and not data_dir(cloud, leaver).exists()
    assert ledger[replaced.volume_id]["status"] == "in-use"

    await service.scale(cid, "db", 2)  # the node comes back on a volume of its own, a new one
    await expect(service, cid, "active")
    [added] = [n for n in await service.nodes(cid) if n.node_id == "db-2"]
    assert added.volume_id not in (leaver, replaced.volume_id)
    assert (data_dir(cloud, added.volume_id) / "init").read_text() == f"{added.instance_id}\n"

    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    ledger = await volume_ledger(cloud)
    assert [v for v in ledger.values() if v["status"] != "deleted"] == []
    assert list((cloud.workdir / "sim" / "volumes").iterdir()) == []
    assert await cloud.live_names() == []


@pytest.fixture
async def openstack_cloud(store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with simulated_cloud(store, tmp_path, runtime=openstack_runtime) as simulated:
        yield simulated


async def test_volumes_on_openstack_come_from_cinder(openstack_cloud: Cloud) -> None:
    """The same app on the simulator's OpenStack face: Cinder volumes, attached through Nova, found
    by the node at the device Nova names (the virtio by-id path does not exist in a simulated VM)."""
    cloud = openstack_cloud
    service = cloud.service
    cluster, _ = await service.create_cluster(
        owner="o", runtime="os", app=APP, counts={"db": 1}, channel="ssh"
    )
    cid = cluster.id
    await expect(service, cid, "active")
    [node] = await service.nodes(cid)
    provider = await service.provider_for("os")
    [volume] = await provider.describe_volumes(name_prefix=f"{cid}-")
    assert volume.volume_id == node.volume_id and volume.instance_id == node.instance_id
    assert volume.tags["pitrix:node"] == "db-1"  # Cinder metadata
    assert (data_dir(cloud, node.volume_id) / "init").read_text() == f"{node.instance_id}\n"
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    assert await provider.describe_volumes(name_prefix=f"{cid}-") == []
    assert [v for v in (await volume_ledger(cloud)).values() if v["status"] != "deleted"] == []
