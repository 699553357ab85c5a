"""The management API's etcd watches, spread over channels of their own.

The runtime watches the status of every cluster it works on through ``/v1/watch``: 300 clusters
created at once are 300 watch streams. On one gRPC channel to etcd, past about 200 streams every
further call waits without a byte sent until its deadline (measured against the embedded etcd:
200 idle watches fine; 250, and a put on the same channel waits out its 5 s). When those watches
shared metad's one channel, its heartbeats, status writes and mirror stopped with them. So the
watches never use the channel of every other call, and each channel here carries at most
``per_channel`` of them; a channel is opened when all are full and closed when it carries none.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from pitrix.store import Store

PER_CHANNEL = 100


class WatchChannels:
    def __init__(self, template: Store, per_channel: int = PER_CHANNEL) -> None:
        self.template = template  # whose endpoints, prefix, timeout and TLS each channel takes
        self.per_channel = per_channel
        self._open: dict[Store, int] = {}  # each channel's store → its watches now
        self._lock = asyncio.Lock()  # a burst of watches fills a channel before opening another

    @property
    def channels(self) -> int:
        return len(self._open)

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[Store]:
        """A store for one watch, for as long as the watch lasts."""
        async with self._lock:
            store = next((s for s, n in self._open.items() if n < self.per_channel), None)
            if store is None:
                t = self.template
                store = await Store.connect(list(t.endpoints), prefix=t.prefix, timeout=t.timeout, tls=t.tls)
                self._open[store] = 0
            self._open[store] += 1
        try:
            yield store
        finally:
            self._open[store] -= 1
            if self._open[store] == 0:
                del self._open[store]
                await store.close()

    async def close(self) -> None:
        stores, self._open = list(self._open), {}
        for store in stores:
            await store.close()
