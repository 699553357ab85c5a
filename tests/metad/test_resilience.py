"""metad over an etcd that goes away and comes back: the mirror catches up, held polls answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd

DEADLINE = 30.0


async def test_mirror_catches_up_after_an_etcd_restart(tmp_path: Path, net) -> None:
    etcd = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    url = await etcd.start()
    store = await Store.connect([url], tls=etcd.client_tls)
    metad = Metad(store, net.metad_ip, 0, 0)
    await metad.start()
    manage = MetadManagementClient(metad.manage_url)
    connector = aiohttp.TCPConnector(local_addr=(net.ip(1), 0))
    session = aiohttp.ClientSession(connector=connector)
    try:
        await manage.put_data("/clusters/c1/env/web", {"port": 80})
        await manage.put_mapping("i-1", {"cluster_id": "c1", "role": "web", "ip": net.ip(1)})
        since = metad.mirror.revision

        async def poll() -> tuple[str, int]:
            params = {"wait": "true", "prev_version": str(since)}
            async with session.get(
                metad.instance_url + "/self/env/port", params=params, headers={"Accept": "application/json"}
            ) as response:
                return await response.json(), int(response.headers["X-Metad-Version"])

        held = asyncio.create_task(poll())
        await asyncio.wait_for(metad.mirror.waiters.wait_for_count(1), DEADLINE)
        await etcd.stop()
        await etcd.start()  # same data directory and ports: the same cluster comes back
        # Written behind metad's back, straight into etcd, while its watch was broken.
        changed = await asyncio.wait_for(store.put("/clusters/c1/env/web/port", "81"), DEADLINE)
        port, version = await asyncio.wait_for(held, DEADLINE)
        assert (port, version) == ("81", changed)
        assert metad.mirror.healthy
    finally:
        await session.close()
        await manage.close()
        await metad.stop()
        await store.close()
        await etcd.stop()
