"""wait_agents against a real metad that refuses first heartbeats as busy (503 + Retry-After):
the wait goes on while metad refuses them, so a burst of new agents that metad sheds does not
fail their clusters' creates; an agent that is silent while metad refuses nothing still fails
the step at the deadline."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from pitrix.agent.errors import BusyError
from pitrix.agent.metad_client import MetadClient
from pitrix.agent.report import MetadReporter
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.records import Cluster, Job, MetadataCluster, Node
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps import agents as agent_steps
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.nodes import save
from pitrix.runtime.steps.publishing import register
from pitrix.sealing import Sealer
from pitrix.store import Store

APP = {"name": "web", "roles": [{"name": "web", "count": 1, "image": "x"}]}
TIMEOUT = 0.5  # the step's deadline here (AGENT_TIMEOUT is 120 s)


@dataclass
class World:
    ctx: JobContext
    metad: Metad
    ip: str


@pytest.fixture
async def world(store: Store, sealer: Sealer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    monkeypatch.setattr(agent_steps, "AGENT_TIMEOUT", TIMEOUT)
    net = f"127.{random.randint(101, 254)}.{random.randint(0, 255)}"
    metad = Metad(store, f"{net}.1", 0, 0, wait_timeout=30.0, keepalive=0.3)
    await metad.start()
    manage = MetadManagementClient(metad.manage_url, idle_timeout=5.0)
    agents = AgentStatus(manage, "cl-1")
    cluster = Cluster(id="cl-1", name="web", owner="o", runtime="r", app=parse_spec(APP), counts={"web": 1})
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
    ip = f"{net}.11"
    node = Node(
        node_id="web-1",
        role="web",
        index=1,
        name="cl-1-web-1",
        instance_id="i-web-1",
        ip=ip,
        status="running",
    )
    await save(ctx, node)
    await register(ctx, ["web-1"])
    await agents.start()
    try:
        yield World(ctx, metad, ip)
    finally:
        await agents.close()
        await manage.close()
        await metad.stop()


async def test_the_wait_goes_on_while_metad_refuses_first_beats(world: World) -> None:
    world.metad.leases.max_granting = 0  # every first beat refused
    step = asyncio.create_task(agent_steps.wait_agents(world.ctx, ["web-1"]))
    client = MetadClient([world.metad.instance_url], bind_address=world.ip)
    reporter = MetadReporter(client, 1.0)
    try:
        began, refused = time.monotonic(), 0
        # Refused for three of the step's deadlines (at the test's own pace, not metad's 1 s).
        while time.monotonic() - began < 3 * TIMEOUT:
            with pytest.raises(BusyError):
                await reporter.heartbeat()
            refused += 1
            await asyncio.sleep(0.05)  # the beat's cadence
        assert not step.done()  # past its deadline, still waiting: metad was refusing
        world.metad.leases.max_granting = 32
        await reporter.heartbeat()
        assert await asyncio.wait_for(step, 30) == "1 agents reporting"
        assert world.metad.leases.refused == refused
    finally:
        step.cancel()
        await client.close()


async def test_a_silent_agent_still_fails_the_step_at_its_deadline(world: World) -> None:
    with pytest.raises(OperationError, match=r"no heartbeat within 0.5s from web-1"):
        await asyncio.wait_for(agent_steps.wait_agents(world.ctx, ["web-1"]), 30)
    health = await world.ctx.metad.healthz()
    assert health["first_beats"] == {"under_way": 0, "refused": 0}
