"""Wake-ups for those waiting on one cluster (the API's `GET /v1/clusters/<id>/wait`).

One condition shared by every waiter woke them all on any change of any cluster, and each then
read its cluster from etcd again: with a thousand clusters in flight, each change cost a thousand
reads (the light-mode benchmark's thousand concurrent creates spent most of pitrixd's CPU there).
Here a change wakes only the waiters of the cluster it touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ClusterSignals:
    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def changed(self, cid: str) -> None:
        """``cid`` changed (its record, its job's steps): wake its waiters."""
        for event in self._waiting.get(cid, ()):
            event.set()

    @asynccontextmanager
    async def listening(self, cid: str) -> AsyncIterator[asyncio.Event]:
        """An event set on each change of ``cid`` while the block runs. Clear it *before* reading
        the cluster, so a change between the read and the wait is not lost."""
        event = asyncio.Event()
        events = self._waiting.setdefault(cid, set())
        events.add(event)
        try:
            yield event
        finally:
            events.discard(event)
            if not events:
                del self._waiting[cid]
