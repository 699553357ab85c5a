"""wait_healthy against a real metad: agents' health checkers report through metad's instance API
(real shell checks, the agent's own reporter), the runtime follows them through AgentStatus."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pitrix.agent.health import HealthCheck, HealthChecker
from pitrix.agent.metad_client import MetadClient
from pitrix.agent.report import MetadReporter
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.records import Cluster, Job, MetadataCluster, Node
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps.agents import wait_healthy
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.nodes import save
from pitrix.runtime.steps.publishing import register
from pitrix.sealing import Sealer
from pitrix.store import Store

APP = {
    "name": "web",
    "roles": [
        {"name": "web", "count": 2, "image": "x", "health_check": {"cmd": "test -f ready", "interval": 1}},
        {"name": "lb", "count": 1, "image": "x"},
    ],
}
CHECK = HealthCheck("test -f ready || { echo 'port 80 closed'; exit 1; }", 0.1, 5.0)


@dataclass
class Vm:
    node_id: str
    ip: str
    root: Path


@dataclass
class World:
    ctx: JobContext
    nodes: dict[str, Vm]
    instance_url: str


@pytest.fixture
async def world(store: Store, sealer: Sealer, tmp_path: Path) -> AsyncIterator[World]:
    """A metad on its own loopback /24, the cluster's nodes registered in it by the real step."""
    net = f"127.{random.randint(101, 254)}.{random.randint(0, 255)}"
    metad = Metad(store, f"{net}.1", 0, 0, wait_timeout=30.0, keepalive=0.3)
    await metad.start()
    manage = MetadManagementClient(metad.manage_url, idle_timeout=5.0)
    agents = AgentStatus(manage, "cl-1")
    cluster = Cluster(
        id="cl-1", name="web", owner="o", runtime="r", app=parse_spec(APP), counts={"web": 2, "lb": 1}
    )
    ctx = JobContext(
        store=store,
        cluster=cluster,
        job=Job(id="j-1", cluster_id="cl-1", action="create"),
        provider=None,  # type: ignore[arg-type]  # no step here reaches the cloud
        metadata=MetadataCluster(owner="o", runtime="r", name="m"),
        metad=manage,
        agents=agents,
        sealer=sealer,
        keypairs=KeyPairs(store, sealer),
    )
    nodes = {}
    for n, (role, index) in enumerate([("web", 1), ("web", 2), ("lb", 1)], start=11):
        node_id = f"{role}-{index}"
        ip = f"{net}.{n}"
        nodes[node_id] = Vm(node_id, ip, tmp_path / node_id)
        nodes[node_id].root.mkdir()
        await save(
            ctx,
            Node(
                node_id=node_id,
                role=role,
                index=index,
                name=f"cl-1-{node_id}",
                instance_id=f"i-{node_id}",
                ip=ip,
                status="running",
            ),
        )
    await register(ctx, list(nodes))
    await agents.start()
    try:
        yield World(ctx, nodes, metad.instance_url)
    finally:
        await agents.close()
        await manage.close()
        await metad.stop()


@contextlib.asynccontextmanager
async def checking(world: World, node_id: str) -> AsyncIterator[HealthChecker]:
    """The node's agent health loop, reporting to metad from the node's address."""
    node = world.nodes[node_id]
    client = MetadClient([world.instance_url], bind_address=node.ip)
    checker = HealthChecker(MetadReporter(client), node.root)
    checker.offer(CHECK)
    task = asyncio.create_task(checker.serve())
    try:
        yield checker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


async def report(world: World, node_id: str, ok: bool, error: str | None = None) -> None:
    """One report as the node's agent makes it, outside any check loop (a verdict from earlier)."""
    client = MetadClient([world.instance_url], bind_address=world.nodes[node_id].ip)
    try:
        await MetadReporter(client).health(ok, error)
    finally:
        await client.close()


async def test_waits_for_fresh_healthy_reports_and_skips_roles_without_checks(world: World) -> None:
    ctx, agents = world.ctx, world.ctx.agents
    assert await wait_healthy(ctx, ["lb-1"]) == "no health checks"
    # Healthy before the step began (say, before a stop): that must not count.
    await report(world, "web-1", True)
    await agents.wait_for(lambda _: agents.health("i-web-1") is not None, 10)
    step = asyncio.create_task(wait_healthy(ctx, ["web-1", "web-2", "lb-1"]))
    async with checking(world, "web-1") as one, checking(world, "web-2") as two:
        await asyncio.wait_for(asyncio.gather(one.wait_checks(2), two.wait_checks(2)), 20)
        await agents.wait_for(
            lambda _: all(agents.healthy(i, 0) is False for i in ("i-web-1", "i-web-2")), 10
        )
        assert not step.done()
        (world.nodes["web-1"].root / "ready").touch()
        await asyncio.wait_for(one.wait_checks(one.checks + 2), 20)
        assert not step.done()  # web-2 still fails
        (world.nodes["web-2"].root / "ready").touch()
        assert await asyncio.wait_for(step, 20) == "2 nodes healthy"


async def test_timeout_names_unhealthy_nodes_with_their_output(world: World) -> None:
    ctx = world.ctx
    await report(world, "web-1", True)  # from before the step: web-1 then reports nothing more
    await ctx.agents.wait_for(lambda _: ctx.agents.health("i-web-1") is not None, 10)
    async with checking(world, "web-2") as two:
        step = asyncio.create_task(wait_healthy(ctx, ["web-1", "web-2", "lb-1"], timeout=3.0))
        await asyncio.wait_for(two.wait_checks(2), 20)
        with pytest.raises(OperationError) as failed:
            await step
    message = str(failed.value)
    assert message.startswith("not healthy within 3s: ")
    assert "web-1 (no check reported since the step began)" in message
    assert "web-2 (unhealthy: exit status 1: port 80 closed)" in message
    assert "lb-1" not in message
