"""An applied report that fails (the metadata store is down) is sent again once metad can store
it: otherwise the runtime, which waits on applied reports for convergence, would wait for a change
the agent applied long ago until the next change came."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
from pathlib import Path

from agent_helpers import World, port_resource, running

from pitrix.agent.agent import build_agent
from pitrix.agent.config import Overrides, load_config
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd

_blocks = itertools.count(random.Random(os.getpid() * 11).randrange(0, 200))


async def test_applied_report_is_sent_again_after_a_store_outage(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    url = await etcd.start()
    store = await Store.connect([url], prefix="/retry", timeout=1.0, tls=etcd.client_tls)
    block = next(_blocks) % 250 + 1
    metad = Metad(store, f"127.103.{block}.1", 0, 0, wait_timeout=20.0)
    await metad.start()
    manage = MetadManagementClient(metad.manage_url, idle_timeout=5.0)
    world = World(metad, manage, block)
    root = tmp_path / "vm"
    dest = port_resource(root)
    try:
        await world.seed()
        await world.caught_up()
        # The store goes away; metad still answers reads from its mirror, but cannot store reports.
        await etcd.stop()
        config = load_config(
            root,
            None,
            Overrides(backend="metad", nodes=[metad.instance_url], watch=True),
            environ={"PITRIX_VM_IP": world.ip},
        )
        config.heartbeat_interval = 0.2
        agent = build_agent(config, announce=lambda _i: None)
        async with running(agent):
            await asyncio.wait_for(agent.wait_rounds(1), 20)
            assert dest.read_text() == "listen 80\n"  # applied from the mirror
            assert agent.unreported is not None  # ... and its report refused (503): kept
            revision = agent.unreported[0]
            assert await etcd.start() == url
            await asyncio.wait_for(agent.wait_until(lambda: agent.unreported is None), 30)
            applied = await world.status("applied")
            assert applied["revision"] == revision
            assert applied["resources"] == {"port": {"ok": True, "error": None}}
    finally:
        await manage.close()
        await metad.stop()
        await store.close()
        await etcd.stop()
