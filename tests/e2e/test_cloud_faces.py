"""One small cluster on each face of the simulator: QingCloud, OpenStack (Keystone/Nova) and EC2.

The same runtime service drives each cloud only through its provider (aioboto3 for EC2, signed
with SigV4 and checked by the simulator): the metadata VM boots from userdata, the node gets its
key pair (ImportKeyPair / Nova key pairs / QingCloud key pairs), its host key is pinned from what
the cloud shows (EC2's and Nova's console), the agent is pushed over SSH and registers, and the
delete leaves the ledger with no live VM and no name created twice. Light VMs: the point is the
cloud's part, not an app's. The demo app on each face is the chaos suite's long form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_cloud import Cloud, simulated_cloud
from e2e_daemons import duplicated_names, live
from test_ssh_channel import settled
from test_ssh_openstack import openstack_runtime

from pitrix.cli.demo import Child, sim_runtime
from pitrix.store import Store

pytestmark = pytest.mark.e2e


def aws_runtime(sim: Child, name: str = "aws") -> dict[str, Any]:
    """The simulator's EC2 face as an AWS runtime, from its ready line (SSH on the simulator's port)."""
    ready = sim.ready
    return {
        "name": name,
        "provider": "aws",
        "endpoint": ready["ec2_endpoint"],
        "region": ready["region"],
        "access_key_id": ready["access_key_id"],
        "secret_access_key": ready["secret_access_key"],
        "ssh_port": 2222,
    }


FACES: dict[str, Callable[[Child], dict[str, Any]]] = {
    "qingcloud": lambda sim: sim_runtime(sim.ready, "qingcloud"),
    "openstack": lambda sim: openstack_runtime(sim, "openstack"),
    "aws": lambda sim: aws_runtime(sim, "aws"),
}

APP: dict[str, Any] = {
    "name": "faces",
    "version": "1.0.0",
    "roles": [{"name": "node", "count": 1, "image": "plain", "services": {"start": {"cmd": "true"}}}],
}


def small(face: str) -> Callable[[Child], dict[str, Any]]:
    def runtime(sim: Child) -> dict[str, Any]:
        return {**FACES[face](sim), "metadata_size": 1}

    return runtime


@pytest.fixture(params=list(FACES))
async def face(request: pytest.FixtureRequest, store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with simulated_cloud(store, tmp_path, "--light", runtime=small(request.param)) as cloud:
        yield cloud


async def test_a_cluster_on_each_face(face: Cloud, request: pytest.FixtureRequest) -> None:
    name = request.node.callspec.params["face"]
    service = face.service
    cluster, job = await service.create_cluster(owner="o1", runtime=name, app=APP, channel="ssh")
    cid = cluster.id
    await settled(service, cid, "active")
    steps = {s.name: s.detail for s in await service.job_steps(cid, job.id)}
    assert steps["wait-agents"] == "1 agents reporting", steps
    [node] = await service.nodes(cid)
    assert node.instance_id and node.ip
    provider = await service.provider_for(name)
    assert provider.name == name
    [instance] = await provider.describe_instances(instance_ids=[node.instance_id])
    assert instance.name == node.name and instance.private_ip == node.ip
    assert instance.tags.get("pitrix:cluster") == cid
    if name == "aws":  # what EC2 shows of it: the key pair imported for the owner, the console's key
        assert instance.raw["KeyName"] and instance.raw["State"]["Name"] == "running"
        assert "ssh_host_key" not in instance.raw
        assert await provider.host_keys(instance)

    await service.delete_cluster(cid)
    await settled(service, cid, "deleted")
    ledger = await face.ledger()
    assert not any(cid in vm["name"] for vm in live(ledger)), live(ledger)
    assert duplicated_names(ledger) == {}
