"""Each cluster's event history, kept in pitrixd's etcd so that it outlives the process.

The hub writes an event it is about to hand to its subscribers here first, under a key made of
the etcd revision it came from and its place among that cluster's events of that revision: a
replica or a restart that sees the same revision again writes the same keys, so recording is
idempotent, and a stream can tell history from live events by that position alone (no gap, no
duplicate). Only the replica that owns a cluster records its events (pitrix.api.events says how
an adopting replica fills in what the previous owner had not recorded): every replica would
otherwise put every event once each. A cursor per replica (a revision it recorded everything up
to, written in the same transaction as that revision's events) lets a restarted hub replay what it
missed while down; replicas record different clusters, so one replica's cursor says nothing of
another's progress. It moves at most every ``CURSOR_EVERY`` seconds: written with every revision
it was a put for each event; a restart replays those few seconds again, under the same keys.

The history is bounded per cluster by count and age, oldest first; it goes with the cluster's
record when that is removed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pitrix.logs import get_logger
from pitrix.runtime import keys
from pitrix.store import Op, Store

if TYPE_CHECKING:
    from pitrix.api.events import Event

EVENT_LOG = "/event-log/"
CURSOR = "/pitrix/event-log-cursor"  # a replica's is CURSOR/<replica id>; this one before replicas
CURSOR_EVERY = 5.0
# etcd refuses a transaction of more than 128 operations by default.
TXN_OPS = 100
DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """How much history a cluster keeps: at most ``max_events`` (checked every ``trim_every``
    writes, so it may briefly exceed by that much) and nothing older than ``max_age`` seconds
    (checked every ``sweep_every`` seconds)."""

    max_events: int = 1000
    max_age: float = 7 * 86400.0
    trim_every: int = 50
    sweep_every: float = 600.0


def position(event_id: str) -> tuple[int, int]:
    revision, _, index = event_id.partition(".")
    return int(revision), int(index)


def rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_since(text: str, now: float) -> float:
    """``10m``, ``2h``, ``90s``, ``1d`` (that long ago) or an RFC 3339 time; ValueError otherwise."""
    found = DURATION.match(text.strip())
    if found:
        return now - float(found.group(1)) * UNIT_SECONDS[found.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("must be a duration such as 10m, 2h, 1d or an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise ValueError("an RFC 3339 time needs its offset (Z for UTC)")
    return moment.timestamp()


class EventLog:
    def __init__(self, store: Store, limits: HistoryLimits | None = None, replica: str = "") -> None:
        self.store = store
        self.limits = limits or HistoryLimits()
        self.cursor_key = f"{CURSOR}/{replica}" if replica else CURSOR
        self._cursor_moved = -CURSOR_EVERY  # monotonic time of the last cursor write
        self._written: dict[str, int] = {}
        self.log = get_logger("pitrix.api.event_log")

    @staticmethod
    def prefix(cluster_id: str) -> str:
        return f"{EVENT_LOG}{cluster_id}/"

    async def cursor(self) -> int:
        """The last revision this replica recorded; an install from before replicas kept one
        cursor for all, which a replica without its own starts from."""
        kv = await self.store.get(self.cursor_key)
        if kv is None and self.cursor_key != CURSOR:
            kv = await self.store.get(CURSOR)
        return int(kv.value) if kv is not None else 0

    async def newest(self, cluster_id: str) -> int:
        """The revision of the cluster's newest kept event (0: none kept)."""
        start, end = self.store.prefix_range(self.prefix(cluster_id))
        kvs, _, _ = await self.store.range(start, end, limit=1, sort_order="descend")
        return position(kvs[0].key.rpartition("/")[2])[0] if kvs else 0

    async def record(self, events: list[Event], revision: int, cursor: bool = True) -> None:
        """Keep ``events`` (of one revision or of several in order, up to ``revision``) and move
        the cursor to ``revision`` if it was last moved ``CURSOR_EVERY`` seconds ago or more
        (``cursor`` False: never, for a catch-up of older revisions, which must not move it back);
        a removed cluster's history goes in the same transaction (with the events of its own
        before its removal: they would be deleted with it)."""
        removed = {e.cluster_id for e in events if e.kind == "cluster_removed"}
        ops = [
            Op("put", f"{self.prefix(e.cluster_id)}{e.event_id}", json.dumps(e.record()).encode())
            for e in events
            if e.cluster_id not in removed
        ]
        ops += [Op("delete_prefix", self.prefix(cid)) for cid in sorted(removed)]
        moved = time.monotonic()
        cursor = cursor and moved - self._cursor_moved >= CURSOR_EVERY
        if cursor:
            ops.append(Op("put", self.cursor_key, str(revision).encode()))
        for start in range(0, len(ops), TXN_OPS):
            await self.store.txn([], ops[start : start + TXN_OPS])
        if cursor:
            self._cursor_moved = moved
        for cid in removed:
            self._written.pop(cid, None)
        for e in events:
            if e.cluster_id in removed:
                continue
            count = self._written.get(e.cluster_id, 0) + 1
            if count >= self.limits.trim_every:
                count = 0
                await self.trim(e.cluster_id)
            self._written[e.cluster_id] = count

    async def read(
        self, cluster_id: str, since: float | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The cluster's kept events, oldest first (those at or after ``since``, the last ``limit``
        of them), and the id of the newest one kept whatever the filters (None: no history)."""
        if since is None and limit:
            # the common ask (the console's, `-n`): only the newest keys are read
            start, end = self.store.prefix_range(self.prefix(cluster_id))
            kvs, _, _ = await self.store.range(start, end, limit=limit, sort_order="descend")
            kvs.reverse()
        else:
            kvs, _ = await self.store.get_prefix(self.prefix(cluster_id))
        if not kvs:
            return [], None
        newest = kvs[-1].key.rpartition("/")[2]
        events = [json.loads(kv.value) for kv in kvs]
        if since is not None:
            events = [e for e in events if e.get("time_unix", 0) >= since]
        if limit is not None:
            events = events[-limit:] if limit else []
        return events, newest

    async def trim(self, cluster_id: str, now: float | None = None) -> int:
        """Drop the cluster's oldest events beyond the count or older than the age; how many went."""
        start, end = self.store.prefix_range(self.prefix(cluster_id))
        _, count, _ = await self.store.range(start, end, count_only=True)
        oldest_kept = (now if now is not None else time.time()) - self.limits.max_age
        excess = count - self.limits.max_events
        dropped = 0
        while True:
            kvs, _, _ = await self.store.range(start, end, limit=TXN_OPS)
            doomed: list[str] = []
            for kv in kvs:
                if dropped + len(doomed) < excess or json.loads(kv.value).get("time_unix", 0) < oldest_kept:
                    doomed.append(kv.key)
                else:
                    break
            if doomed:
                await self.store.txn([], [Op("delete", key) for key in doomed])
                dropped += len(doomed)
            if len(doomed) < TXN_OPS:
                return dropped

    async def clusters(self) -> list[str]:
        kvs, _ = await self.store.get_prefix(keys.CLUSTERS)
        return [kv.key[len(keys.CLUSTERS) :] for kv in kvs]

    async def sweep_forever(self) -> None:
        """Apply the age limit to every cluster now and then (the count limit applies as events are
        written). Not at start: a restart of many clusters' pitrixd has better things to do first."""
        while True:
            await asyncio.sleep(self.limits.sweep_every)
            try:
                for cid in await self.clusters():
                    await self.trim(cid)
            except Exception:
                self.log.exception("event_log.sweep_failed")


async def record_with_retry(
    log: EventLog, events: list[Event], revision: int, attempts: int = 3, cursor: bool = True
) -> bool:
    """``record``, retried briefly (etcd may be changing leader); False if it never went through,
    in which case the cursor stays behind and the next start replays the revision."""
    for attempt in range(attempts):
        try:
            await log.record(events, revision, cursor)
            return True
        except Exception:
            if attempt == attempts - 1:
                log.log.exception("event_log.write_failed", revision=revision)
                return False
            await asyncio.sleep(0.2 * (attempt + 1))
    return False
