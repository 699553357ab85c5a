"""A metad's mirror after its etcd is SIGKILLed and restarted by the supervisor, and after its watch
goes silent: writes through the management API are still read back at once and reach long-polls."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp

from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store, WatchBatch
from pitrix.store.embedded import EmbeddedEtcd
from pitrix.store.watch import follow

DEADLINE = 10.0


async def test_writes_reach_the_mirror_after_an_etcd_kill_and_a_silent_watch(tmp_path: Path, net) -> None:
    etcd = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    url = await etcd.start()
    etcd.supervise()  # as pitrix-metad --embedded-etcd does
    store = await Store.connect([url], tls=etcd.client_tls)
    metad = Metad(store, net.metad_ip, 0, 0)
    await metad.start()
    mirror = metad.mirror
    manage = MetadManagementClient(metad.manage_url)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(net.ip(1), 0)))
    silent: asyncio.Task[None] | None = None

    async def poll(since: int) -> tuple[str, int]:
        params = {"wait": "true", "prev_version": str(since)}
        async with session.get(
            metad.instance_url + "/self/env/port", params=params, headers={"Accept": "application/json"}
        ) as response:
            return await response.json(), int(response.headers["X-Metad-Version"])

    async def write(port: str) -> None:
        """One write through metad, read back at once and seen by a poll held before it."""
        held = asyncio.create_task(poll(mirror.revision))
        try:
            await asyncio.wait_for(mirror.waiters.wait_for_count(1), DEADLINE)
            revision = await asyncio.wait_for(manage.put_data("/clusters/c1/env/web/port", port), DEADLINE)
            assert mirror.revision >= revision, "the write was answered before the mirror had it"
            assert await asyncio.wait_for(held, DEADLINE) == (port, revision)
        finally:
            held.cancel()

    try:
        await manage.put_data("/clusters/c1/env/web", {"port": 80})
        await manage.put_mapping("i-1", {"cluster_id": "c1", "role": "web", "ip": net.ip(1)})

        # Its etcd dies; the supervisor starts it again on the same data and ports.
        assert etcd.pid is not None
        os.kill(etcd.pid, signal.SIGKILL)
        await asyncio.wait_for(etcd.wait_restarts(1), DEADLINE)
        await write("81")

        # The mirror's watch goes silent, whatever the cause (one was a create request whose write
        # waited for good after its call was cut off: tests/store/test_watch.py). Here a live watch
        # of keys nobody writes stands in for it. The next write must not wait it out.
        assert mirror._task is not None
        mirror._task.cancel()

        async def nothing(batch: WatchBatch) -> None:
            raise AssertionError(f"nothing is written under /silent/, got {batch}")

        silent = asyncio.create_task(follow(store, "/silent/", mirror.revision + 1, nothing, on_broken=print))
        mirror._task = silent
        await write("82")
        assert mirror.watch_restarts == 1 and silent.done()
        await write("83")  # the re-created watch goes on
        assert mirror.watch_restarts == 1 and mirror.healthy
    finally:
        if silent is not None:
            silent.cancel()
        await session.close()
        await manage.close()
        await metad.stop()
        await store.close()
        await etcd.stop()
