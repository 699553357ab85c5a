"""Long-lived watch streams on channels of their own, at most ``per_channel`` to a channel.

On one gRPC channel to etcd, past about 200 concurrent streams every further call on that
channel waits without a byte sent until its deadline (measured against the embedded etcd over
TLS: 200 idle watches fine; 250, and a put on the same channel waits out its 5 s; a put on
another channel is unaffected). A process opens watches per object: metad one per ``/v1/watch``
of the runtime (one per cluster it works on), pitrixd one per queued lock waiter and one per
lock holder. Had they shared the channel of every unary call, a few hundred of them would stall
heartbeats, puts and gets alike. So a store's watches never use its own channel: each takes a
place on one of the pool's channels, a channel is opened when all are full and closed when it
carries none.

Each channel is a :class:`~pitrix.store.client.Store` of its own with the parent's endpoints,
prefix, timeout and TLS, so it reconnects (and rotates endpoints) like any store; a watch on it
resumes from its next revision exactly as on the parent's channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pitrix.store.client import Store

PER_CHANNEL = 100


class WatchPool:
    def __init__(self, parent: Store, per_channel: int = PER_CHANNEL) -> None:
        self.parent = parent  # whose endpoints, prefix, timeout and TLS each channel takes
        self.per_channel = per_channel
        self._open: dict[Store, int] = {}  # each channel's store → the streams it carries now
        self._lock = asyncio.Lock()  # a burst of watches fills a channel before opening another
        self._closed = False

    @property
    def channels(self) -> int:
        return len(self._open)

    @property
    def stores(self) -> list[Store]:
        """The channels open now (each a store of its own, to reconnect or inspect)."""
        return list(self._open)

    @property
    def streams(self) -> int:
        return sum(self._open.values())

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[Store]:
        """A channel (as a store) for one long-lived stream, for as long as the stream lasts."""
        from pitrix.store.client import Store, StoreError

        async with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            channel = next((s for s, n in self._open.items() if n < self.per_channel), None)
            if channel is None:
                p = self.parent
                channel = Store(list(p.endpoints), prefix=p.prefix, timeout=p.timeout, tls=p.tls)
                # Start where the parent is now: after a failover, not at an endpoint it left.
                channel._endpoint_index = p._endpoint_index
                await channel._open()
                self._open[channel] = 0
            self._open[channel] += 1
        try:
            yield channel
        finally:
            await self._release(channel)

    async def _release(self, channel: Store) -> None:
        if channel not in self._open:
            return  # the pool was closed meanwhile, and the channel with it
        self._open[channel] -= 1
        if self._open[channel] == 0:
            del self._open[channel]
            await channel.close()

    async def close(self) -> None:
        """Close every channel: the watches on them end with the parent store's own error."""
        self._closed = True
        channels, self._open = list(self._open), {}
        for channel in channels:
            await channel.close()
