"""Server-sent event streams: a snapshot of the clusters first, then their changes as they happen.

The snapshot (the clusters as of one etcd revision, then only changes after it) means a client
(re)connecting never has to combine a listing with a stream; a comment line every ``KEEPALIVE``
seconds lets it and any proxy notice a dead connection.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from pitrix.api.events import Event, EventHub, cluster_view

KEEPALIVE = 15.0


async def stream_events(
    request: web.Request,
    hub: EventHub,
    owner: str | None,
    cluster_id: str | None,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    # Subscribe before reading the snapshot, so no change falls between the two; changes the
    # snapshot already shows (revision not above it) are then skipped.
    async with hub.subscribe(owner, cluster_id) as sub:
        snapshot, revision = await hub.snapshot(owner, cluster_id)
        await response.prepare(request)
        for cluster in snapshot:
            await response.write(
                Event("cluster", cluster.id, cluster.owner, 0, {"cluster": cluster_view(cluster)}).sse()
            )
        await response.write(b"event: ready\ndata: {}\n\n")
        with contextlib.suppress(ConnectionResetError):
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        event = await sub.queue.get()
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if event is None:
                    break
                if event.revision > revision:
                    await response.write(event.sse())
    return response
