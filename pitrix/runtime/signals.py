"""Wake-ups for those waiting on one cluster (the API's `GET /v1/clusters/<id>/wait`).

One condition shared by every waiter woke them all on any change of any cluster, and each then
read its cluster from etcd again: with a thousand clusters in flight, each change cost a thousand
reads (the light-mode benchmark's thousand concurrent creates spent most of pitrixd's CPU there).
Here a change wakes only the waiters of the cluster it touched.

A change is either of the cluster's record (its state, its job) or only of its job's steps (a
journal record). Most waiters decide on the record alone (a job's end): a step change would only
make them read the cluster again to find it as it was, about twenty reads of etcd per create
that changed nothing. They listen with ``steps=False`` and sleep through those.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ClusterSignals:
    def __init__(self) -> None:
        # Per cluster: each waiter's event, and whether step changes wake it.
        self._waiting: dict[str, dict[asyncio.Event, bool]] = {}

    def changed(self, cid: str, *, record: bool = True) -> None:
        """``cid`` changed: its record (``record``), or only its job's steps: wake its waiters
        (a step change only those that asked for them)."""
        for event, steps in self._waiting.get(cid, {}).items():
            if record or steps:
                event.set()

    @asynccontextmanager
    async def listening(self, cid: str, *, steps: bool = True) -> AsyncIterator[asyncio.Event]:
        """An event set on each change of ``cid`` while the block runs (with ``steps=False``, of
        its record only). Clear it *before* reading the cluster, so a change between the read and
        the wait is not lost."""
        event = asyncio.Event()
        events = self._waiting.setdefault(cid, {})
        events[event] = steps
        try:
            yield event
        finally:
            events.pop(event, None)
            if not events:
                del self._waiting[cid]
