"""An agent's first heartbeat refused by a busy metad (503 + Retry-After) is sent again no sooner
than metad asked, jittered so that a burst of refused agents does not come back at once, and
lands once metad has room: a refused beat delays a node's first heartbeat, it does not lose it."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from pathlib import Path

import pytest
from agent_helpers import World, port_resource, running

from pitrix.agent.agent import MIN_BUSY_PAUSE, build_agent, heartbeat_pause
from pitrix.agent.config import Overrides, load_config
from pitrix.agent.errors import BackendError, BusyError
from pitrix.agent.metad_client import MetadClient
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd

_blocks = itertools.count(random.Random(os.getpid() * 13).randrange(0, 200))


def test_a_busy_answer_is_honoured_with_jitter_and_other_failures_stay_within_the_interval() -> None:
    busy = [heartbeat_pause(BusyError("busy", 3.0), 0.2) for _ in range(200)]
    assert all(3.0 <= p <= 6.0 for p in busy)  # never sooner than asked, at most twice it
    assert len({round(p, 3) for p in busy}) > 100  # spread, not in step
    assert max(busy) - min(busy) > 1.5
    zero = [heartbeat_pause(BusyError("busy", 0.0), 0.2) for _ in range(50)]
    assert all(MIN_BUSY_PAUSE <= p <= 2 * MIN_BUSY_PAUSE for p in zero)
    failed = [heartbeat_pause(BackendError("down"), 2.0) for _ in range(200)]
    assert all(1.0 <= p <= 2.0 for p in failed)  # within the interval: the lease lasts three
    assert len({round(p, 3) for p in failed}) > 100


@pytest.fixture
async def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    etcd = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    url = await etcd.start()
    store = await Store.connect([url], prefix="/busy", timeout=5.0, tls=etcd.client_tls)
    block = next(_blocks) % 250 + 1
    metad = Metad(store, f"127.104.{block}.1", 0, 0, wait_timeout=20.0)
    await metad.start()
    manage = MetadManagementClient(metad.manage_url, idle_timeout=5.0)
    world = World(metad, manage, block)
    try:
        await world.seed()
        await world.caught_up()
        yield world
    finally:
        await manage.close()
        await metad.stop()
        await store.close()
        await etcd.stop()


async def test_the_metad_client_says_how_long_a_busy_metad_asked_to_wait(world: World) -> None:
    world.metad.leases.max_granting = 0
    client = MetadClient([world.metad.instance_url], bind_address=world.ip)
    try:
        with pytest.raises(BusyError) as refused:
            await client.put("/self/status/heartbeat", {"interval": 1})
        assert refused.value.retry_after == 1.0
        world.metad.leases.max_granting = 32
        await client.put("/self/status/heartbeat", {"interval": 1})
    finally:
        await client.close()


async def test_a_refused_first_beat_comes_back_after_retry_after_and_lands(
    world: World, tmp_path: Path
) -> None:
    leases = world.metad.leases
    leases.max_granting = 0  # every first beat refused, each asked back in 1 s
    refusals: list[float] = []
    refused = asyncio.Condition()
    ask = leases._retry_after

    def counted() -> int:
        refusals.append(time.monotonic())
        asyncio.get_running_loop().create_task(_notify(refused))
        return ask()

    leases._retry_after = counted  # type: ignore[method-assign]
    root = tmp_path / "vm"
    port_resource(root)
    config = load_config(
        root,
        None,
        Overrides(backend="metad", nodes=[world.metad.instance_url], watch=True),
        environ={"PITRIX_VM_IP": world.ip},
    )
    config.heartbeat_interval = 0.1  # an agent ignoring Retry-After would be back in 0.1 s
    agent = build_agent(config, announce=lambda _i: None)
    async with running(agent):
        async with asyncio.timeout(30), refused:
            await refused.wait_for(lambda: len(refusals) >= 3)
        # Asked back in 1 s each time: never sooner (later is only the host's load).
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(refusals)), refusals
        assert await world.status("heartbeat") is None  # a refused beat wrote nothing
        key = "/_pitrix/status/c1/i-1/heartbeat"
        watch = world.metad.store.watch_prefix(key, world.metad.mirror.revision + 1)
        leases.max_granting = 32  # room again: the agent's next try lands
        try:
            async with asyncio.timeout(30):
                async for batch in watch:
                    if any(event.type == "put" and event.key == key for event in batch.events):
                        break
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
    beat = await world.status("heartbeat")
    assert beat is not None and beat["interval"] == 0.1


async def _notify(condition: asyncio.Condition) -> None:
    async with condition:
        condition.notify_all()
