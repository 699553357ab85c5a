"""The relink step against a real metad: the links written whole (a removed name deleted, a run again
changing nothing), and a metad that refuses the write leaves a RolledBack naming why."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.runtime.actions.relink import write_links
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.records import Cluster, Job, MetadataCluster
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps.context import JobContext, RolledBack
from pitrix.sealing import Sealer
from pitrix.store import Store

APP = {"name": "web", "roles": [{"name": "web", "count": 1, "image": "x"}]}


@dataclass
class World:
    ctx: JobContext
    manage: MetadManagementClient


def context(store: Store, sealer: Sealer, metad: MetadManagementClient) -> JobContext:
    cluster = Cluster(id="cl-1", name="web", owner="o", runtime="r", app=parse_spec(APP), counts={"web": 1})
    return JobContext(
        store=store,
        cluster=cluster,
        job=Job(id="j-1", cluster_id="cl-1", action="relink"),
        provider=None,  # type: ignore[arg-type]  # no step here reaches the cloud
        metadata=MetadataCluster(owner="o", runtime="r", name="m"),
        metad=metad,
        agents=None,  # type: ignore[arg-type]  # the step waits on no agent
        sealer=sealer,
        keypairs=KeyPairs(store, sealer),
    )


@pytest.fixture
async def world(store: Store, sealer: Sealer) -> AsyncIterator[World]:
    net = f"127.{random.randint(101, 254)}.{random.randint(0, 255)}"
    metad = Metad(store, f"{net}.1", 0, 0, wait_timeout=30.0, keepalive=0.3)
    await metad.start()
    manage = MetadManagementClient(metad.manage_url, idle_timeout=5.0)
    try:
        yield World(context(store, sealer, manage), manage)
    finally:
        await manage.close()
        await metad.stop()


async def test_links_are_written_whole_and_a_removed_one_is_deleted(world: World) -> None:
    detail = await write_links(world.ctx, {"db": "cl-2", "cache": "cl-3"}, {})
    assert detail.startswith("links cache=cl-3, db=cl-2 at revision ")
    assert await world.manage.get_data("/clusters/cl-1/links") == {"db": "cl-2", "cache": "cl-3"}
    for _ in range(2):  # run again (a resumed job): the same end
        await write_links(world.ctx, {"db": "cl-4"}, {"db": "cl-2", "cache": "cl-3"})
        assert await world.manage.get_data("/clusters/cl-1/links") == {"db": "cl-4"}
    assert (await write_links(world.ctx, {}, {"db": "cl-4"})).startswith("links none at revision ")
    assert not await world.manage.get_data("/clusters/cl-1/links")


async def test_a_write_metad_refuses_is_rolled_back(store: Store, sealer: Sealer) -> None:
    dead = MetadManagementClient("http://127.0.0.1:9", idle_timeout=1.0)  # the discard port: refused
    try:
        with pytest.raises(RolledBack) as failed:
            await write_links(context(store, sealer, dead), {"db": "cl-2"}, {"db": "cl-1"})
    finally:
        await dead.close()
    assert "links not written" in str(failed.value)
    assert "putting the previous ones back failed too" in str(failed.value)
