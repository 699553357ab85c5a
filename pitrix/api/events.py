"""Cluster events for the admin API, taken from etcd's watch of the runtime's records.

Watching the records rather than hooking the runtime means every change is seen exactly as it was
stored, in revision order, whichever process made it; one watch serves every subscriber. Each
event carries the owner of its cluster so a stream shows an owner only its own clusters. Records
are shown as views: password parameters and other sealed values never reach a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pitrix.aio import cancel_and_wait
from pitrix.api.event_log import EventLog, record_with_retry, rfc3339
from pitrix.logs import get_logger
from pitrix.runtime import keys
from pitrix.runtime.records import Cluster
from pitrix.runtime.secret_env import cluster_view_data
from pitrix.sealing import redact
from pitrix.store import Store
from pitrix.store.types import WatchBatch, WatchEvent
from pitrix.store.watch import follow

WATCHED_PREFIX = keys.CLUSTER_RECORDS
QUEUE_LIMIT = 1000
# Revisions the watch may run ahead of the history's writes (then it waits), and the most handed
# out after one write of the history.
INBOX_LIMIT = 10_000
GROUP_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Event:
    """One change: ``kind`` is cluster, cluster_removed, node, job or step."""

    kind: str
    cluster_id: str
    owner: str
    revision: int
    data: dict[str, Any]
    # Its place among the events of its revision, and when the hub saw it (0: a snapshot's).
    index: int = 0
    time: float = 0.0

    @property
    def event_id(self) -> str:
        """``<revision>.<index>``, zero-padded so ids sort as the events happened."""
        return f"{self.revision:016d}.{self.index:04d}"

    def record(self) -> dict[str, Any]:
        """The event as the history keeps and serves it."""
        stamped = (
            {"id": self.event_id, "time": rfc3339(self.time), "time_unix": self.time} if self.time else {}
        )
        return {"type": self.kind, "cluster_id": self.cluster_id, **stamped, **self.data}

    def sse(self) -> bytes:
        payload = json.dumps(self.record())
        return f"id: {self.revision}\nevent: {self.kind}\ndata: {payload}\n\n".encode()


@dataclass(eq=False)
class Subscription:
    owner: str | None
    cluster_id: str | None
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))

    def wants(self, event: Event) -> bool:
        return (self.owner is None or event.owner == self.owner) and (
            self.cluster_id is None or event.cluster_id == self.cluster_id
        )


Observer = Callable[[Event, float], None]


class EventHub:
    """Fans the watch out to subscribers; a subscriber too slow to keep up is cut off (it reconnects).

    The watch's revisions go to an inbox, and a writer takes out all that came meanwhile: their
    events are kept in the history in one transaction (with the cursor past the last of them),
    then handed out in order. A busy pitrixd makes a revision every few milliseconds (a journal
    record, a node's record), and one transaction per revision was a fifth of its etcd calls;
    under load, the writes now come in as many transactions as the store has round trips' time
    for, and idle, each revision is still written and handed out at once.
    """

    def __init__(
        self, store: Store, observers: list[Observer] | None = None, history: EventLog | None = None
    ) -> None:
        self.store = store
        self.observers = observers or []
        self.history = history
        self._sweeper: asyncio.Task[None] | None = None
        self._live_from = 0  # revisions before it are a replay for the history: observers saw them
        self._owners: dict[str, str] = {}
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[WatchBatch] = asyncio.Queue(INBOX_LIMIT)
        self._writer: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.log = get_logger("pitrix.api.events")

    async def start(self) -> None:
        kvs, revision = await self.store.get_prefix(keys.CLUSTERS)
        for kv in kvs:
            cluster = Cluster.model_validate_json(kv.value)
            self._owners[cluster.id] = cluster.owner
        start = self._live_from = revision + 1
        if self.history is not None:
            # Replay what changed while no hub was recording (a restart, a crash): the history
            # is written before the events are handed out, so the cursor is never ahead of it.
            cursor = await self.history.cursor()
            if cursor:
                start = min(start, cursor + 1)
            self._sweeper = asyncio.create_task(self.history.sweep_forever(), name="api-events-sweep")
        self._writer = asyncio.create_task(self._write_loop(), name="api-events-writer")
        self._task = asyncio.create_task(self._run(start), name="api-events")

    async def close(self) -> None:
        if self._sweeper is not None:
            await cancel_and_wait(self._sweeper)
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._writer is not None:
            await cancel_and_wait(self._writer)
        for sub in list(self._subscribers):
            self._end(sub)

    async def snapshot(self, owner: str | None, cluster_id: str | None) -> tuple[list[Cluster], int]:
        """The clusters a subscription would see now, and the revision they are as of."""
        kvs, revision = await self.store.get_prefix(keys.CLUSTERS)
        clusters = [Cluster.model_validate_json(kv.value) for kv in kvs]
        chosen = [
            c
            for c in sorted(clusters, key=lambda c: c.created)
            if (owner is None or c.owner == owner)
            and (c.id == cluster_id if cluster_id is not None else c.state != "deleted")
        ]
        return chosen, revision

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @contextlib.asynccontextmanager
    async def subscribe(
        self, owner: str | None, cluster_id: str | None = None
    ) -> AsyncIterator[Subscription]:
        sub = Subscription(owner, cluster_id)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    async def _run(self, from_revision: int) -> None:
        """Dispatch every revision once, for as long as the store is open.

        The store's watch already rides out etcd restarts; anything else that breaks it resumes
        here after the last revision dispatched, so subscribers miss nothing. When the hub ends,
        so do its subscribers' streams: a stream left open with nothing behind it would look live.
        """
        try:
            await follow(self.store, WATCHED_PREFIX, from_revision, self._deliver, on_broken=self._broken)
        finally:
            for sub in list(self._subscribers):
                self._end(sub)

    def _broken(self, error: Exception, retry_in: float) -> None:
        self.log.error("events.watch_broke", retry_in=round(retry_in, 3), exc_info=error)

    async def _deliver(self, batch: WatchBatch) -> None:
        """The watch's handler: into the inbox (waiting there when the writer is that far behind)."""
        await self._inbox.put(batch)

    async def _write_loop(self) -> None:
        """Take every revision the inbox holds (at least one, at most ``GROUP_LIMIT``) and hand
        them out: a revision is dispatched only once the history has it."""
        while True:
            batches = [await self._inbox.get()]
            while len(batches) < GROUP_LIMIT and not self._inbox.empty():
                batches.append(self._inbox.get_nowait())
            await self._hand_out(batches)

    async def _hand_out(self, batches: list[WatchBatch]) -> None:
        received = time.time()
        ready: list[Event] = []
        last = 0
        for batch in batches:
            try:
                events = self._events(batch, received)
            except Exception:
                # What came before it goes out first: the order of revisions is kept.
                await self._keep_and_dispatch(ready, last, received)
                ready, last = [], 0
                self._failed(batch.revision)
                continue
            if events:
                ready += events
                last = batch.revision
        await self._keep_and_dispatch(ready, last, received)

    async def _keep_and_dispatch(self, events: list[Event], revision: int, received: float) -> None:
        """Keep ``events`` (of revisions up to ``revision``) in the history, then hand them out."""
        if not events:
            return
        try:
            if self.history is not None:
                await record_with_retry(self.history, events, revision)
            self._dispatch(events, received)
        except Exception:
            self._failed(revision)

    def _failed(self, revision: int) -> None:
        # Part of a revision may be delivered and part not: a subscriber's view would be wrong
        # from here on, so its stream ends and the client's reconnect gets a snapshot.
        self.log.exception("events.dispatch_failed", revision=revision)
        for sub in list(self._subscribers):
            self._end(sub)

    def _events(self, batch: WatchBatch, received: float) -> list[Event]:
        if batch.resync:
            # A compaction skipped history: restate every cluster, which is what a client needs.
            events = [WatchEvent("put", kv.key, kv.value, batch.revision) for kv in batch.state]
        else:
            events = batch.events
        # Cluster documents first: a create writes the cluster and its job in one revision.
        events = sorted(events, key=lambda e: not e.key.startswith(keys.CLUSTERS))
        found: list[Event] = []
        for raw in events:
            event = self._event(raw)
            if event is not None:
                found.append(replace(event, index=len(found), time=received))
        return found

    def _dispatch(self, events: list[Event], received: float) -> None:
        for event in events:
            for observe in self.observers if event.revision >= self._live_from else ():
                observe(event, received)
            for sub in list(self._subscribers):
                if sub.wants(event):
                    try:
                        sub.queue.put_nowait(event)
                    except asyncio.QueueFull:
                        self._end(sub)

    def _end(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        with contextlib.suppress(asyncio.QueueFull):
            sub.queue.put_nowait(None)
        if sub.queue.full():  # make room for the end marker: the stream closes either way
            sub.queue.get_nowait()
            sub.queue.put_nowait(None)

    def _event(self, raw: WatchEvent) -> Event | None:
        key = keys.parse(raw.key)
        if key is None:
            return None
        cid = key.cluster_id
        if key.kind == "cluster":
            if raw.type == "delete":
                return Event("cluster_removed", cid, self._owners.pop(cid, ""), raw.revision, {})
            cluster = Cluster.model_validate_json(raw.value)
            self._owners[cid] = cluster.owner
            return Event("cluster", cid, cluster.owner, raw.revision, {"cluster": cluster_view(cluster)})
        # Other records live there too (a node's bootstrap token, a raw string): not events, and
        # never decoded, or they would end the dispatch of the whole revision they came in.
        if raw.type == "delete" or key.kind not in ("node", "job", "step") or cid not in self._owners:
            return None
        owner = self._owners[cid]
        record = json.loads(raw.value)
        if key.kind == "node":
            return Event("node", cid, owner, raw.revision, {"node": record})
        if key.kind == "job":
            return Event("job", cid, owner, raw.revision, {"job": redact(record)})
        return Event("step", cid, owner, raw.revision, {"job_id": key.job_id, "step": record})


def cluster_view(cluster: Cluster) -> dict[str, Any]:
    """A cluster as the API shows it: the app by name and version, not its whole spec; passwords
    as ``******``."""
    return cluster_view_data(cluster)
