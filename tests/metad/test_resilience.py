"""metad over an etcd that goes away and comes back: the mirror catches up, held polls answer,
management requests answered 503 meanwhile are asked again."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from pitrix.metad.client import MetadClientError, MetadManagementClient
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


async def test_management_requests_ride_out_a_busy_store(tmp_path: Path, net) -> None:
    """metad answers 503 when its etcd does not answer within the store's deadline (a metadata
    VM starved of CPU does, its etcd fine); the runtime's client asks again until the patience
    runs out, rather than failing the step on the first 503."""
    etcd = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    url = await etcd.start()
    store = await Store.connect([url], tls=etcd.client_tls, timeout=0.5)
    metad = Metad(store, net.metad_ip, 0, 0)
    await metad.start()
    patient = MetadManagementClient(metad.manage_url)
    hasty = MetadManagementClient(metad.manage_url, unavailable_patience=0.3)
    assert etcd.pid is not None
    try:
        os.kill(etcd.pid, signal.SIGSTOP)
        try:
            with pytest.raises(MetadClientError) as refused:
                await asyncio.wait_for(hasty.put_data("/clusters/c1/env/web", {"port": 80}), DEADLINE)
            assert refused.value.status == 503
            write = asyncio.create_task(patient.put_data("/clusters/c1/env/web", {"port": 81}))
            await asyncio.wait_for(patient.unavailable_seen.wait(), DEADLINE)
            assert not write.done()
        finally:
            os.kill(etcd.pid, signal.SIGCONT)
        revision = await asyncio.wait_for(write, DEADLINE)
        kv = await store.get("/clusters/c1/env/web/port")
        assert kv is not None and kv.value == b"81" and kv.mod_revision == revision
    finally:
        await patient.close()
        await hasty.close()
        await metad.stop()
        await store.close()
        await etcd.stop()
