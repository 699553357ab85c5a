"""Channel ssh end to end on the simulator: no agent userdata, agents pushed and started over SSH.

Both simulator modes: full (a real ``sh`` and a real pitrix-agent process per VM) and light (the
in-process shell starts the VM's in-process agent on ``pitrix-agent -config-file``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_cloud import Cloud, demo_app, simulated_cloud
from e2e_daemons import duplicated_names, live, runtime_definition

from pitrix.metad.client import MetadManagementClient
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.keypairs import keypair_name
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.service import InvalidRequest, RuntimeService
from pitrix.store import Store
from simulator.testing import pid_alive
from simulator.vm import USERDATA_PATH

pytestmark = pytest.mark.e2e
JOB_TIMEOUT = 180.0


def simulated(store: Store, workdir: Path, light: bool) -> contextlib.AbstractAsyncContextManager[Cloud]:
    return simulated_cloud(store, workdir, *(["--light"] if light else []))


@pytest.fixture(params=["full", "light"])
async def ssh_cloud(request: pytest.FixtureRequest, store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with simulated(store, tmp_path, request.param == "light") as cloud:
        yield cloud


@pytest.fixture
async def full_cloud(store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with simulated(store, tmp_path, False) as cloud:
        yield cloud


def kill_agent(instance_id: str) -> int:
    """SIGKILL the VM's pitrix-agent process only (its app keeps running); its pid."""
    needle = f"PITRIX_VM_ID={instance_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in environ and b"pitrix-agent" in cmdline and pid_alive(int(entry.name)):
            os.kill(int(entry.name), signal.SIGKILL)
            return int(entry.name)
    raise AssertionError(f"no pitrix-agent process for {instance_id}")


async def settled(service: RuntimeService, cid: str, state: str) -> Cluster:
    async def ended(cluster: Cluster) -> bool:
        return cluster.state in ("active", "stopped", "deleted", "failed")

    cluster = await service.wait(cid, ended, JOB_TIMEOUT)
    assert cluster.state == state, cluster.last_error
    return cluster


async def stop_with_web1_silent(
    service: RuntimeService, client: MetadManagementClient, cid: str, web1: Node
) -> str:
    """Once web-1's agent is known silent, stop the cluster: web-1's stop runs over SSH (recorded
    as its agent would, plus ``via``), web-2's live agent runs its own. The stop's command id."""
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
    return command_id


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
        # Its one-time token came with it (the agent made its own key): owner-only files.
        root = cloud.workdir / "sim/vms" / node.instance_id / "root"
        assert stat.S_IMODE((root / "etc/pitrix/agent.toml").stat().st_mode) == 0o600
        assert stat.S_IMODE((root / "var/lib/pitrix-agent").stat().st_mode) == 0o700
    if not light:
        lb = next(n for n in nodes if n.role == "lb")
        async with cloud.http.get(f"http://{lb.ip}:8000/") as response:
            assert response.status == 200

    job = await service.stop_cluster(cid)
    await settled(service, cid, "stopped")
    job = await service.start_cluster(cid)
    await settled(service, cid, "active")
    steps = [s.name for s in await service.job_steps(cid, job.id)]
    assert steps.index("register") < steps.index("bootstrap-agents") < steps.index("wait-agents")

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


async def test_a_silent_agent_s_command_runs_over_ssh_once(full_cloud: Cloud) -> None:
    service = full_cloud.service
    cluster, _ = await service.create_cluster(
        owner="o1", runtime="sim", app=demo_app(), counts={"web": 2, "lb": 1}, channel="ssh"
    )
    cid = cluster.id
    await settled(service, cid, "active")
    web1 = next(n for n in await service.nodes(cid) if n.node_id == "web-1")
    record = await service.metadata.get("o1", "sim")
    assert record is not None
    client = service.metadata.client(record)
    kill_agent(web1.instance_id)
    command_id = await stop_with_web1_silent(service, client, cid, web1)
    posted = await client.get_data(f"/clusters/{cid}/cmd/{web1.instance_id}") or {}
    assert posted.get("id") != command_id  # never handed to the silent agent

    await service.delete_cluster(cid)
    await settled(service, cid, "deleted")
    assert live(await full_cloud.ledger()) == []


async def test_metad_reached_through_an_ssh_tunnel(full_cloud: Cloud) -> None:
    service = full_cloud.service
    await service.put_runtime(dict(runtime_definition(full_cloud.sim), metad_via_ssh=True))
    cluster, _ = await service.create_cluster(
        owner="o2", runtime="sim", app=demo_app(), counts={"web": 1, "lb": 1}, channel="ssh"
    )
    cid = cluster.id
    await settled(service, cid, "active")
    record = await service.metadata.get("o2", "sim")
    assert record is not None
    client = service.metadata.client(record)
    assert client.base_url.startswith(("https://127.0.0.1:", "http://127.0.0.1:")), client.base_url
    assert await client.healthz()
    provider = await service.provider_for("sim")
    [meta_vm] = await provider.describe_instances(instance_ids=[record.instance_id])
    [pair] = await provider.describe_key_pairs(name=keypair_name("o2", "sim"))  # type: ignore[attr-defined]
    assert meta_vm.raw["keypair_ids"] == [pair.keypair_id]  # made with pitrixd's key for the tunnel
    await service.delete_cluster(cid)
    await settled(service, cid, "deleted")
    assert live(await full_cloud.ledger()) == []
