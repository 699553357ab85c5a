"""Watches that never lose or repeat an event, whatever happens to the connection.

Each watch owns one gRPC Watch stream on the store's channel (aetcd's watcher flattens events
and hides the response header, so revisions could not be grouped or resumed exactly). The
generator remembers the next revision it owes the consumer; a dropped stream, an etcd restart
or a channel swap re-creates the watch from exactly that revision. If etcd has compacted it
away, the consumer gets one ``resync`` batch with the whole current state instead, since the
events in between can no longer be told.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from itertools import groupby
from typing import Any

from aetcd import rpc
from grpc import StatusCode
from grpc.aio import EOF, AioRpcError

from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.store.client import Store, StoreError, StoreUnavailable, cancelled_by_caller, send_on_stream
from pitrix.store.types import WatchBatch, WatchEvent

RESUME_FIRST_DELAY = 0.05
RESUME_MAX_DELAY = 1.0
FOLLOW_FIRST_DELAY = 0.1
FOLLOW_MAX_DELAY = 5.0


class _StreamDropped(Exception):
    """The watch stream ended or was cancelled by etcd; resume it."""


async def follow(
    store: Store,
    prefix: str,
    from_revision: int,
    handle: Callable[[WatchBatch], Awaitable[None]],
    *,
    on_broken: Callable[[Exception, float], None],
    first_delay: float = FOLLOW_FIRST_DELAY,
    max_delay: float = FOLLOW_MAX_DELAY,
) -> None:
    """``handle`` every batch under ``prefix`` from ``from_revision`` on, until the store closes.

    For a process's long-lived watch (metad's mirror, the admin API's event hub): the watch
    itself rides out dropped streams and etcd restarts, and whatever still breaks it, an error
    it does not retry or a batch ``handle`` failed on, is told to ``on_broken`` (with the delay
    before the next try) and the watch is re-created after the last batch handled, so no batch
    is skipped. ``handle`` must take a batch it already took (a failed one comes again).
    """
    backoff = Backoff(first_delay, max_delay)
    while not store.closed:
        error: Exception
        try:
            async for batch in store.watch_prefix(prefix, from_revision):
                await handle(batch)
                from_revision = batch.revision + 1
                backoff.reset()
            error = StoreError(f"the watch of {prefix!r} ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        if store.closed:
            break
        delay = backoff.next()
        on_broken(error, delay)
        await asyncio.sleep(delay)


def watch_prefix(store: Store, prefix: str, from_revision: int | None = None) -> AsyncIterator[WatchBatch]:
    """Batches of changes under ``prefix`` from ``from_revision`` (inclusive; ``None``: from now).

    One batch per etcd revision, in order, each exactly once, across dropped streams and etcd
    restarts. Closing the generator (or cancelling its consumer) cancels the etcd watch.
    """
    start, end = store.prefix_range(prefix)
    return _watch(store, start, end, from_revision, prefix)


def watch_key(store: Store, key: str, from_revision: int | None = None) -> AsyncIterator[WatchBatch]:
    """Like :func:`watch_prefix` for one exact key (a prefix watch would also see longer siblings)."""
    return _watch(store, store._k(key), b"", from_revision, key)


def _check_revision(from_revision: object) -> int | None:
    if from_revision is None:
        return None
    if not isinstance(from_revision, int) or isinstance(from_revision, bool) or from_revision < 1:
        raise StoreError(f"from_revision: expected a revision >= 1 or None, got {from_revision!r}")
    return from_revision


def _batches(store: Store, events: Any) -> list[WatchBatch]:
    batches = []
    for revision, group in groupby(events, key=lambda event: int(event.kv.mod_revision)):
        batches.append(
            WatchBatch(
                revision=revision,
                events=[
                    WatchEvent(
                        type="delete" if event.type == rpc.Event.DELETE else "put",
                        key=store._unk(event.kv.key),
                        value=bytes(event.kv.value),
                        revision=revision,
                    )
                    for event in group
                ],
            )
        )
    return batches


async def _watch(
    store: Store, start: bytes, end: bytes, from_revision: int | None, label: str
) -> AsyncIterator[WatchBatch]:
    next_revision = _check_revision(from_revision)
    async with (
        store.watch_pool.held() as channel,
        contextlib.aclosing(_stream(store, channel, start, end, next_revision, label)) as stream,
    ):
        async for batch in stream:
            yield batch


async def _stream(
    store: Store, channel: Store, start: bytes, end: bytes, next_revision: int | None, label: str
) -> AsyncGenerator[WatchBatch, None]:
    """The watch itself, its stream on ``channel`` (one of the store's watch pool), every unary
    request (the start revision, a resync's read) on ``store``."""
    log = get_logger("pitrix.store.watch", prefix=store.prefix, watch=label)
    backoff = Backoff(RESUME_FIRST_DELAY, RESUME_MAX_DELAY)
    attempts = 0
    while True:
        if next_revision is None:
            # "From now" must mean now, not whenever the stream happens to be (re)established.
            try:
                next_revision = await store.revision() + 1
            except StoreUnavailable as exc:
                log.info("watch.waiting_for_etcd", error=str(exc))
                await asyncio.sleep(backoff.next())
                continue
        if store.closed:
            raise StoreError("store is closed")  # the watch ends with its store
        client = channel.client  # raises StoreError too once the pool closed the channel
        generation = channel.generation
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        attempts += 1
        resume_now = False
        try:
            create = rpc.WatchCreateRequest(
                key=start, range_end=end, start_revision=next_revision, progress_notify=True
            )
            try:
                await send_on_stream(call, rpc.WatchRequest(create_request=create))
            except StoreUnavailable as exc:
                raise _StreamDropped(str(exc)) from exc
            while True:
                response = await call.read()
                if response is EOF:
                    raise _StreamDropped("stream ended")
                backoff.reset()
                if response.created and attempts > 1:
                    # Said once per resumption, so a watch that never comes back shows in the log.
                    log.info("watch.resumed", at=next_revision, generation=generation)
                if response.compact_revision:
                    kvs, _, revision = await store.range(start, end)
                    log.warning(
                        "watch.resync",
                        wanted=next_revision,
                        compacted=int(response.compact_revision),
                        revision=revision,
                    )
                    next_revision = revision + 1
                    resume_now = True
                    yield WatchBatch(revision=revision, resync=True, state=kvs)
                    break
                if response.canceled:
                    raise _StreamDropped(f"cancelled by etcd: {response.cancel_reason or 'no reason'}")
                for batch in _batches(store, response.events):
                    if batch.revision < next_revision:
                        continue  # already delivered before a resume; never repeat
                    next_revision = batch.revision + 1
                    yield batch
                if not response.events and not response.created:
                    # A progress notification: everything up to header.revision has been sent.
                    next_revision = max(next_revision, int(response.header.revision) + 1)
        except AioRpcError as exc:
            if channel.generation != generation and exc.code() == StatusCode.CANCELLED:
                resume_now = True  # the channel was swapped under us; follow it at once
                log.info("watch.channel_swapped", resume_at=next_revision)
            else:
                log.info(
                    "watch.dropped", code=str(exc.code()), details=exc.details(), resume_at=next_revision
                )
                if exc.code() == StatusCode.UNAVAILABLE:
                    await _reconnect(channel, generation)
        except _StreamDropped as exc:
            log.info("watch.dropped", reason=str(exc), resume_at=next_revision)
        except StoreUnavailable as exc:
            # The resync read could not be answered; the next attempt will ask again.
            log.info("watch.resync_failed", error=str(exc))
        except asyncio.CancelledError:
            if cancelled_by_caller():
                raise
            # gRPC's way of reporting a closed channel: the store reconnected (follow it) or closed.
            resume_now = True
            log.info("watch.channel_swapped", resume_at=next_revision)
        finally:
            call.cancel()
        if not resume_now:
            await asyncio.sleep(backoff.next())


async def _reconnect(store: Store, generation: int) -> None:
    # Closed meanwhile: the next loop turn ends the watch with the store's own error.
    with contextlib.suppress(StoreError):
        await store.reconnect(generation)
