"""Waiting helpers for store tests: deadlines on conditions, never bare sleeps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp

from pitrix.store import WatchBatch
from pitrix.store.embedded import EmbeddedEtcd


class Collector:
    """Drains a watch in a task so tests can wait until a given number of batches arrived."""

    def __init__(self, watch: AsyncIterator[WatchBatch]) -> None:
        self.watch = watch
        self.batches: list[WatchBatch] = []
        self._changed = asyncio.Condition()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.watch:
            async with self._changed:
                self.batches.append(batch)
                self._changed.notify_all()

    async def wait_for(self, count: int, within: float = 10.0) -> list[WatchBatch]:
        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.batches) >= count or self.task.done())
            if self.task.done() and len(self.batches) < count:
                self.task.result()  # surface the watch's error
                raise AssertionError(f"watch ended after {len(self.batches)} batches, wanted {count}")

        await asyncio.wait_for(enough(), within)
        return self.batches[:count]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def eventually(probe: Callable[[], Awaitable[bool]], within: float = 10.0, every: float = 0.02) -> None:
    """Wait until ``probe()`` holds, for state only observable by asking (an external server's gauges)."""

    async def loop() -> None:
        while not await probe():  # noqa: ASYNC110 - nothing to await but asking again
            await asyncio.sleep(every)

    await asyncio.wait_for(loop(), within)


async def watchers(etcd: EmbeddedEtcd) -> int:
    """The watchers etcd itself counts (its own gauge), whichever channel opened them."""
    assert etcd.client_tls is not None
    connector = aiohttp.TCPConnector(ssl=etcd.client_tls.ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"{etcd.client_url}/metrics") as resp,
    ):
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("etcd_debugging_mvcc_watcher_total "):
            return int(float(line.split()[1]))
    raise AssertionError("etcd exposes no watcher gauge")
