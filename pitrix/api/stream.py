"""Server-sent event streams: a snapshot of the clusters first, then their changes as they happen.

The snapshot (the clusters as of one etcd revision, then only changes after it) means a client
(re)connecting never has to combine a listing with a stream; a comment line every ``KEEPALIVE``
seconds lets it and any proxy notice a dead connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pitrix.api.event_log import position
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
        await _follow(response, sub.queue, lambda event: event.sse() if event.revision > revision else None)
    return response


async def _follow(
    response: web.StreamResponse,
    queue: asyncio.Queue[Event | None],
    encode: Callable[[Event], bytes | None],
) -> None:
    """Write each live event ``encode`` gives bytes for, a keep-alive comment when the stream is
    quiet (proxies close silent connections), until the hub ends it or the client goes."""
    with contextlib.suppress(ConnectionResetError):
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    event = await queue.get()
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if event is None:
                return
            data = encode(event)
            if data is not None:
                await response.write(data)


async def stream_history(
    request: web.Request, hub: EventHub, cluster_id: str, since: float | None, limit: int | None
) -> web.StreamResponse:
    """One cluster's kept events (``since``, ``limit``), then ``ready``, then live ones.

    The hub records an event before it hands it out (or, for a cluster another replica records,
    keeps it among its recent ones), and this subscribes before reading the history: a live event
    is either in what ``kept`` reads or still to come on the queue (or both, then skipped by its
    position), so nothing falls between the two and nothing shows twice.
    """
    assert hub.history is not None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    async with hub.subscribe(None, cluster_id) as sub:
        history, newest = await hub.kept(cluster_id, since, limit)
        await response.prepare(request)
        for record in history:
            await response.write(_sse(record["type"], record["id"], record))
        await response.write(b"event: ready\ndata: {}\n\n")
        last = position(newest) if newest else (0, 0)
        await _follow(
            response,
            sub.queue,
            lambda event: (
                _sse(event.kind, event.event_id, event.record())
                if (event.revision, event.index) > last
                else None
            ),
        )
    return response


def _sse(kind: str, event_id: str, record: dict[str, Any]) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(record)}\n\n".encode()
