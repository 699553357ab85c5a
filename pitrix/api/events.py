"""Cluster events for the admin API, taken from etcd's watch of the runtime's records.

Watching the records rather than hooking the runtime means every change is seen exactly as it was
stored, in revision order, whichever process made it; one watch serves every subscriber. Each
event carries the owner of its cluster so a stream shows an owner only its own clusters. Records
are shown as views: password parameters and other sealed values never reach a stream.

Every replica's hub sees every event, but only the replica that owns a cluster records its events
in the history (``records``): three replicas recording everything put each event three times.
Ownership moves (a replica dies, hands an idle cluster over, loses its lease), and the hubs see
those moves at slightly different moments than the revisions they follow, so an event may reach
every hub while none thinks it records that cluster. So the first time a hub records a cluster
(since it started, or since it last saw the cluster as another's), it first catches up: the
changes of that cluster after the newest event kept, up to the one in hand, are read back from
etcd's history and recorded (the same keys, whoever recorded them already). A cluster taken over
while idle has no next event to start that: every ``CATCH_UP_EVERY`` seconds the hub also catches
up on the clusters it records and has not yet. What the previous owner had produced before it died
is thus recorded by the next owner within seconds; only a revision etcd has compacted away by then
is lost, and the hub says so in its log. Until the
owner has recorded an event, another replica's stream still shows it: each hub keeps the last
``RECENT`` events it handed out and a history read adds those newer than the history's newest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pitrix.aio import cancel_and_wait
from pitrix.api.event_log import EventLog, position, record_with_retry, rfc3339
from pitrix.logs import get_logger
from pitrix.runtime import keys
from pitrix.runtime.records import Cluster
from pitrix.runtime.secret_env import cluster_view_data
from pitrix.sealing import redact
from pitrix.store import RevisionCompacted, Store, StoreError
from pitrix.store.types import WatchBatch, WatchEvent
from pitrix.store.watch import follow

WATCHED_PREFIX = keys.CLUSTER_RECORDS
QUEUE_LIMIT = 1000
# Events a hub keeps in memory for the streams it serves of clusters another replica records.
RECENT = 2000
# The most revisions a catch-up reads back (the watch of every cluster's records over them).
CATCH_UP_MAX = 20000
# How often a hub looks for clusters it records but has not caught up on (taken over while idle),
# and how many it catches up on each time.
CATCH_UP_EVERY = 2.0
CATCH_UP_BATCH = 50
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
    # Its place among its cluster's events of its revision, and when the hub saw it (0: a snapshot's).
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
# Whether this replica records the cluster's events now (it owns the cluster).
Records = Callable[[str], bool]


class EventHub:
    """Fans the watch out to subscribers; a subscriber too slow to keep up is cut off (it reconnects).

    ``records`` says which clusters' events this replica keeps in ``history`` (None: all of them,
    a lone pitrixd's or a test's hub).

    The watch's revisions go to an inbox, and a writer takes out all that came meanwhile: their
    events are kept in the history in one transaction (with the cursor past the last of them),
    then handed out in order. A busy pitrixd makes a revision every few milliseconds (a journal
    record, a node's record), and one transaction per revision was a fifth of its etcd calls;
    under load, the writes now come in as many transactions as the store has round trips' time
    for, and idle, each revision is still written and handed out at once.
    """

    def __init__(
        self,
        store: Store,
        observers: list[Observer] | None = None,
        history: EventLog | None = None,
        records: Records | None = None,
    ) -> None:
        self.store = store
        self.observers = observers or []
        self.history = history
        self.records = records
        self.recent: deque[Event] = deque(maxlen=RECENT)
        self._caught_up: set[str] = set()  # clusters recorded here with nothing missing before
        self._recording = asyncio.Lock()  # a revision's recording and a catch-up, one at a time
        self._delivered = 0  # the last revision handed out
        self._sweeper: asyncio.Task[None] | None = None
        self._catcher: asyncio.Task[None] | None = None
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
            if self.records is not None:
                self._catcher = asyncio.create_task(self._catch_up_forever(), name="api-events-catch-up")
        self._writer = asyncio.create_task(self._write_loop(), name="api-events-writer")
        self._task = asyncio.create_task(self._run(start), name="api-events")

    async def close(self) -> None:
        for task in (self._sweeper, self._catcher, self._task, self._writer):
            if task is not None:
                await cancel_and_wait(task)
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

    async def kept(
        self, cluster_id: str, since: float | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The cluster's history as ``EventLog.read`` gives it, followed by the events this hub
        handed out that its recorder has not kept yet (another replica records it, a moment
        behind this one)."""
        assert self.history is not None
        events, newest = await self.history.read(cluster_id, since, limit)
        last = position(newest) if newest else (0, 0)
        later = [
            e.record()
            for e in list(self.recent)
            if e.cluster_id == cluster_id
            and (e.revision, e.index) > last
            and (since is None or e.time >= since)
        ]
        if later:
            events = events + later
            if limit is not None:
                events = events[-limit:] if limit else []
            newest = later[-1]["id"]
        return events, newest

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
        for batch in batches:
            try:
                events = self._events(batch, received)
            except Exception:
                # What came before it goes out first: the order of revisions is kept.
                await self._keep_and_dispatch(ready, received)
                ready = []
                self._failed(batch.revision)
                continue
            ready += events
        await self._keep_and_dispatch(ready, received)
        self._delivered = max(self._delivered, batches[-1].revision)

    async def _keep_and_dispatch(self, events: list[Event], received: float) -> None:
        """Keep ``events`` (of one or more revisions, in order) in the history, then hand them out."""
        if not events:
            return
        revision = events[-1].revision
        try:
            if self.history is not None:
                async with self._recording:
                    await self._record(events, revision, received)
            self._dispatch(events, received)
        except Exception:
            self._failed(revision)

    def _failed(self, revision: int) -> None:
        # Part of a revision may be delivered and part not: a subscriber's view would be wrong
        # from here on, so its stream ends and the client's reconnect gets a snapshot.
        self.log.exception("events.dispatch_failed", revision=revision)
        for sub in list(self._subscribers):
            self._end(sub)

    async def _record(self, events: list[Event], revision: int, received: float) -> None:
        """Keep the events (of revisions up to ``revision``) of the clusters this replica records
        (a removed cluster's history goes wherever its removal is seen), catching up first on a
        cluster new to this hub: on what came before its first event here."""
        assert self.history is not None
        mine: list[Event] = []
        for event in events:
            cid = event.cluster_id
            if event.kind == "cluster_removed":
                self._caught_up.discard(cid)
                mine.append(event)
            elif self.records is None or self.records(cid):
                mine.append(event)
            else:
                self._caught_up.discard(cid)  # another replica's: its own hub records it
        fresh = {e.cluster_id for e in mine if e.kind != "cluster_removed"} - self._caught_up
        if self.records is None:  # this hub records everything: its cursor covers its restarts
            self._caught_up |= fresh
            fresh = set()
        first: dict[str, int] = {}
        for event in mine:
            first.setdefault(event.cluster_id, event.revision)
        for cid in sorted(fresh):
            if await self._catch_up(cid, first[cid], received):
                self._caught_up.add(cid)
        if mine and not await record_with_retry(self.history, mine, revision):
            self._caught_up -= {e.cluster_id for e in mine}  # its next event catches up again

    async def _catch_up_forever(self) -> None:
        """Catch up on the clusters this replica records and has not caught up on: those taken
        over while idle (no event of theirs has come since) and those whose catch-up failed."""
        assert self.records is not None
        while True:
            await asyncio.sleep(CATCH_UP_EVERY)
            pending = [cid for cid in list(self._owners) if cid not in self._caught_up and self.records(cid)]
            for cid in pending[:CATCH_UP_BATCH]:
                try:
                    async with self._recording:
                        if cid in self._caught_up or not self._delivered or not self.records(cid):
                            continue
                        if await self._catch_up(cid, self._delivered + 1, time.time()):
                            self._caught_up.add(cid)
                except Exception:
                    self.log.exception("events.catch_up_failed", cluster_id=cid)

    async def _catch_up(self, cid: str, revision: int, received: float) -> bool:
        """Record what ``cid``'s previous recorder left unkept before ``revision``: its changes
        after the newest event kept, read back from etcd's history. False if etcd did not answer
        (it is tried again)."""
        assert self.history is not None
        try:
            newest = await self.history.newest(cid)
            earliest = max(newest + 1, revision - CATCH_UP_MAX)
            span = await self._replay_span(cid, earliest, revision - 1) if earliest < revision else None
            if span is None:
                return True
            start, last = span
            replayed = 0
            async for batch in self.store.watch_prefix(WATCHED_PREFIX, start):
                if batch.resync:
                    self.log.warning("events.history_gap", cluster_id=cid, after=newest, before=revision)
                    break
                if batch.revision > last:
                    break
                found = [e for e in self._events(batch, received, replay=True) if e.cluster_id == cid]
                if found:
                    await self.history.record(found, batch.revision, cursor=False)
                    replayed += len(found)
                if batch.revision >= last:  # the cluster's last change up to ``revision``: done
                    break
        except StoreError as exc:
            self.log.warning("events.catch_up_failed", cluster_id=cid, error=str(exc))
            return False
        if replayed:
            self.log.info("events.caught_up", cluster_id=cid, events=replayed, after=newest)
        return True

    async def _replay_span(self, cid: str, start: int, end: int) -> tuple[int, int] | None:
        """The revisions a catch-up of ``cid`` over ``[start, end]`` reads: from ``start`` (never
        before the cluster was created) to the last write of its records as of ``end``; None when
        none was written in that span: most catch-ups find the cluster unchanged since its newest
        kept event."""
        created, changed = 0, 0
        record = self.store.prefix_range(keys.cluster_key(cid))[0]
        for first, last in ((record, b""), self.store.prefix_range(keys.cluster_data_prefix(cid))):
            try:
                kvs, _, _ = await self.store.range(
                    first, last, limit=1, revision=end, sort_target="mod", sort_order="descend"
                )
            except RevisionCompacted:
                return start, end  # etcd kept too little to tell: the watch says what it can
            if kvs:
                changed = max(changed, kvs[0].mod_revision)
                if last == b"":
                    created = kvs[0].create_revision
        return (max(start, created), changed) if changed >= start else None

    def _events(self, batch: WatchBatch, received: float, *, replay: bool = False) -> list[Event]:
        if batch.resync:
            # A compaction skipped history: restate every cluster, which is what a client needs.
            events = [WatchEvent("put", kv.key, kv.value, batch.revision) for kv in batch.state]
        else:
            events = batch.events
        # Cluster documents first: a create writes the cluster and its job in one revision.
        events = sorted(events, key=lambda e: not e.key.startswith(keys.CLUSTERS))
        found: list[Event] = []
        counts: dict[str, int] = {}
        for raw in events:
            event = self._event(raw, replay=replay)
            if event is not None:
                index = counts.get(event.cluster_id, 0)
                counts[event.cluster_id] = index + 1
                found.append(replace(event, index=index, time=received))
        return found

    def _dispatch(self, events: list[Event], received: float) -> None:
        self.recent.extend(events)
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

    def _event(self, raw: WatchEvent, *, replay: bool = False) -> Event | None:
        """The event of one change; ``replay``: an old change read back, which must not touch
        the clusters' owners as known now."""
        key = keys.parse(raw.key)
        if key is None:
            return None
        cid = key.cluster_id
        if key.kind == "cluster":
            if raw.type == "delete":
                if replay:
                    return None  # a removal is never caught up: the history went with it
                return Event("cluster_removed", cid, self._owners.pop(cid, ""), raw.revision, {})
            cluster = Cluster.model_validate_json(raw.value)
            if not replay:
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
