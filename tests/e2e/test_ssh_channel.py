"""Channel ssh end to end on the simulator: no agent userdata, agents pushed and started over SSH.

Both simulator modes: full (a real ``sh`` and a real pitrix-agent process per VM) and light (the
in-process shell starts the VM's in-process agent on ``pitrix-agent -config-file``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from e2e_cloud import Cloud, demo_app
from e2e_daemons import child_env, duplicated_names, live, runtime_definition

from pitrix.cli.demo import _bin, start_child, stop_child
from pitrix.runtime.keypairs import keypair_name
from pitrix.runtime.records import Cluster
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.service import InvalidRequest, RuntimeService
from pitrix.store import Store
from simulator.testing import random_network
from simulator.vm import USERDATA_PATH

pytestmark = pytest.mark.e2e
JOB_TIMEOUT = 180.0


@pytest.fixture(params=["full", "light"])
async def ssh_cloud(request: pytest.FixtureRequest, store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    argv = [_bin("pitrix-sim"), "--state-dir", str(tmp_path / "sim"), "--port", "0"]
    argv += ["--network", random_network()]
    if request.param == "light":
        argv.append("--light")
    sim = await start_child("pitrix-sim", argv, tmp_path / "sim.log", child_env())
    service = RuntimeService(store, recovery=RecoveryPolicy(enabled=False))
    try:
        await service.start()
        await service.put_runtime(runtime_definition(sim))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield Cloud(service, sim, http, tmp_path)
    finally:
        await service.stop()
        await stop_child(sim)


async def settled(service: RuntimeService, cid: str, state: str) -> Cluster:
    async def ended(cluster: Cluster) -> bool:
        return cluster.state in ("active", "stopped", "deleted", "failed")

    cluster = await service.wait(cid, ended, JOB_TIMEOUT)
    assert cluster.state == state, cluster.last_error
    return cluster


async def described(cloud: Cloud, instance_ids: list[str]) -> list[dict[str, object]]:
    provider = await cloud.service.provider_for("sim")
    return [dict(i.raw) for i in await provider.describe_instances(instance_ids=instance_ids)]


def app_for(light: bool) -> dict[str, object]:
    """The demo app; on a light simulator its services are ``true``: the demo's own processes are
    not what a light VM is for (its lb fails to start there), the SSH bootstrap is."""
    app = demo_app()
    if light:
        for role in app["roles"]:
            for service in role.get("services", {}).values():
                service["cmd"] = "true"
            role.pop("health_check", None)
    return app


async def test_ssh_channel_lifecycle(ssh_cloud: Cloud) -> None:
    cloud, service = ssh_cloud, ssh_cloud.service
    light = bool(cloud.sim.ready.get("light"))
    with pytest.raises(InvalidRequest, match=r"^channel: "):
        await service.create_cluster(owner="o1", runtime="sim", app=demo_app(), channel="telnet")
    assert await service.list_clusters() == []

    cluster, _ = await service.create_cluster(
        owner="o1", runtime="sim", app=app_for(light), counts={"web": 2, "lb": 1}, channel="ssh"
    )
    cid = cluster.id
    assert cluster.channel == "ssh"
    await settled(service, cid, "active")
    steps = [s.name for s in await service.job_steps(cid, cluster.job_id or "")]
    assert steps.index("register") < steps.index("bootstrap-agents") < steps.index("wait-agents")

    nodes = await service.nodes(cid)
    provider = await service.provider_for("sim")
    [pair] = await provider.describe_key_pairs(name=keypair_name("o1", "sim"))  # type: ignore[attr-defined]
    for raw in await described(cloud, [n.instance_id for n in nodes]):
        assert raw["keypair_ids"] == [pair.keypair_id]  # created with pitrixd's public key
    for node in nodes:
        # No userdata: the agent's config reached the VM over SSH.
        assert not (cloud.workdir / "sim/vms" / node.instance_id / "root" / USERDATA_PATH).exists()
        assert 'backend = "metad"' in cloud.vm_file(node.instance_id, "/etc/pitrix/agent.toml")
    if not light:
        lb = next(n for n in nodes if n.role == "lb")
        async with cloud.http.get(f"http://{lb.ip}:8000/") as response:
            assert response.status == 200

    await service.scale(cid, "web", 3)
    await settled(service, cid, "active")
    assert len([n for n in await service.nodes(cid) if n.role == "web"]) == 3
    await service.scale(cid, "web", 1)
    await settled(service, cid, "active")
    assert [n.node_id for n in await service.nodes(cid) if n.role == "web"] == ["web-1"]

    await service.delete_cluster(cid)
    await settled(service, cid, "deleted")
    ledger = await cloud.ledger()
    assert live(ledger) == []
    assert duplicated_names(ledger) == {}
