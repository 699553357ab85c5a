"""Stop and start on the simulator with the demo app: services in role order, instances, refusals."""

from __future__ import annotations

from collections import Counter
from typing import Any

import aiohttp
import pytest
from e2e_cloud import Cloud, demo_app

from pitrix.api.app import node_view
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.records import Cluster
from pitrix.runtime.service import RuntimeService

pytestmark = pytest.mark.e2e
JOB_TIMEOUT = 120.0


async def settle(service: RuntimeService, cid: str) -> Cluster:
    """The cluster once its job has ended (whatever the outcome)."""

    async def ended(cluster: Cluster) -> bool:
        return cluster.state in ("active", "stopped", "deleted", "failed")

    return await service.wait(cid, ended, JOB_TIMEOUT)


async def expect(service: RuntimeService, cid: str, state: str) -> Cluster:
    cluster = await settle(service, cid)
    assert cluster.state == state, cluster.last_error
    return cluster


async def through_lb(http: aiohttp.ClientSession, ip: str, count: int = 12) -> Counter[str]:
    answered: Counter[str] = Counter()
    for _ in range(count):
        async with http.get(f"http://{ip}:8000/") as response:
            assert response.status == 200, await response.text()
            answered[(await response.text()).split()[0]] += 1
    return answered


async def lb_ip(service: RuntimeService, cid: str) -> str:
    return next(n.ip for n in await service.nodes(cid) if n.role == "lb")


async def health_reported(service: RuntimeService, cid: str) -> None:
    """The role's health check is published and every web node's agent runs it and says ok."""
    cluster = await service.get_cluster(cid)
    record = await service.metadata.get(cluster.owner, cluster.runtime)
    assert record is not None
    client = service.metadata.client(record)
    published = await client.get_data(f"/clusters/{cid}/health/web")
    assert published == {
        "cmd": "opt/demo/bin/demo check-web etc/demo/web.conf",
        "interval": "1",
        "timeout": "10",
        "unhealthy_threshold": "3",
        "action_cmd": "",
        "action_timeout": "60",
    }
    webs = [n.instance_id for n in await service.nodes(cid) if n.role == "web"]
    agents = AgentStatus(client, cid)
    await agents.start()
    try:
        await agents.wait_for(
            lambda view: all((view.get(i, {}).get("health") or {}).get("ok") is True for i in webs), 60
        )
    finally:
        await agents.close()


def step_times(steps: list[Any]) -> dict[str, tuple[float, float]]:
    return {s.name: (s.started, s.finished or s.started) for s in steps}


async def agents_in_view(service: RuntimeService, cid: str) -> None:
    """The cluster view shows each node's agent: alive, web nodes healthy, config applied without error."""
    cluster = await service.get_cluster(cid)
    reports = await service.agent_reports(cluster)
    assert reports is not None
    views = {
        n.node_id: node_view(n.model_dump(mode="json"), reports)["agent"] for n in await service.nodes(cid)
    }
    assert set(views) == {"web-1", "web-2", "lb-1"}
    for node_id, agent in views.items():
        assert agent["reporting"] is True, (node_id, agent)
        assert agent["applied_revision"] and agent["applied_revision"] > 0, (node_id, agent)
        assert agent["resources_ok"] is True, (node_id, agent)
    assert views["web-1"]["health"] == {"ok": True, "error": None}
    assert views["lb-1"]["health"] is None  # the lb role has no health check
    assert node_view({"instance_id": "i-x"}, None)["agent"] is None  # metad unreachable: unknown, not down


async def test_stop_then_start_brings_the_app_back(cloud: Cloud) -> None:
    service = cloud.service
    app = demo_app()
    # web stops after the lb (reverse of start's order), so the lb never sends to a stopped node
    for role in app["roles"]:
        role["services"]["stop"]["order"] = role["services"]["start"]["order"]
    app["roles"][0]["health_check"] = {"cmd": "opt/demo/bin/demo check-web etc/demo/web.conf", "interval": 1}
    cluster, _ = await service.create_cluster(owner="o1", runtime="sim", app=app, counts={"web": 2, "lb": 1})
    cid = cluster.id
    await expect(service, cid, "active")
    await health_reported(service, cid)
    assert set(await through_lb(cloud.http, await lb_ip(service, cid))) == {"web-1", "web-2"}
    await agents_in_view(service, cid)

    with pytest.raises(LifecycleError, match="cannot start a cluster that is active"):
        await service.start_cluster(cid)

    job = await service.stop_cluster(cid)
    stopped = await expect(service, cid, "stopped")
    assert stopped.job_id == job.id
    times = step_times(await service.job_steps(cid, job.id))
    assert times["stop:lb"][1] <= times["stop:web"][0], times
    assert times["stop:web"][1] <= times["stop-instances"][0], times
    statuses = {vm["name"]: vm["status"] for vm in await cloud.ledger() if vm["name"].startswith(cid)}
    assert statuses == {f"{cid}-{n}": "stopped" for n in ("web-1", "web-2", "lb-1")}
    with pytest.raises(aiohttp.ClientError):
        await through_lb(cloud.http, await lb_ip(service, cid), 1)

    for refused in (service.stop_cluster(cid), service.scale(cid, "web", 3)):
        with pytest.raises(LifecycleError, match="cluster that is stopped"):
            await refused
    assert (await service.get_cluster(cid)).state == "stopped"

    job = await service.start_cluster(cid)
    await expect(service, cid, "active")
    times = step_times(await service.job_steps(cid, job.id))
    assert times["wait-agents"][1] <= times["start:web"][0] <= times["start:web"][1] <= times["start:lb"][0]
    assert set(await through_lb(cloud.http, await lb_ip(service, cid))) == {"web-1", "web-2"}

    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    assert await cloud.live_names() == []
