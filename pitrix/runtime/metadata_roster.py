"""Publishing each metadata cluster's members to its agents: one reconciler per pitrixd.

A metadata cluster's record (``MetadataCluster``: member 0's fields and ``members``) is the truth
about where its metads are; agents learn it from the roster (``pitrix.metad.roster``) that metad
serves them. This reconciler keeps the two equal: an etcd watch on the records marks a record to
look at, and one idempotent step compares the record's ``instance_urls`` with what its metad
publishes and writes the list only when they differ. At start every record is looked at once
(a restart, or a change made while no pitrixd ran, is caught up); a metad that cannot be reached
is tried again with backoff. Several replicas may run it at once: each writes only a list that
differs from the published one, the list the record holds now.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from pitrix.aio import cancel_and_wait
from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.metad import roster
from pitrix.runtime.keys import METADATA_CLUSTERS, runtime_key
from pitrix.runtime.metadata import MetadataClusters
from pitrix.runtime.records import MetadataCluster, Runtime
from pitrix.store import Store

# Records looked at together; one metad that does not answer holds up only its own look.
PARALLEL = 8
# How long one look at a metad may take (a VM that went silent must not hold the others).
LOOK_TIMEOUT = 10.0
RETRY_FIRST = 0.5
RETRY_CAP = 30.0


class MetadataRoster:
    """The reconciler: ``start`` looks at every record and follows their changes; ``stop`` ends it."""

    def __init__(
        self,
        store: Store,
        metadata: MetadataClusters,
        *,
        retry_first: float = RETRY_FIRST,
        retry_cap: float = RETRY_CAP,
    ) -> None:
        self.store = store
        self.metadata = metadata
        self._retry = (retry_first, retry_cap)
        self._dirty: set[str] = set()
        self._looking: set[str] = set()  # taken off _dirty, their look not finished yet
        self._due: dict[str, float] = {}  # a key's next try after a failed look (monotonic)
        self._backoffs: dict[str, Backoff] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0  # lists written (tests and logs: a look that found it equal writes none)
        self.looks = 0
        self.settled = asyncio.Condition()  # notified after every round of looks
        self.log = get_logger("pitrix.metadata.roster")

    async def start(self) -> None:
        records, revision = await self.store.get_prefix(METADATA_CLUSTERS)
        for kv in records:
            self._mark(kv.key)
        self._tasks = [
            asyncio.create_task(self._follow(revision + 1), name="metadata-roster-watch"),
            asyncio.create_task(self._work(), name="metadata-roster"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)

    def pending(self) -> bool:
        """Whether a record is still to be looked at (now, after a failure's backoff, or being looked at)."""
        return bool(self._dirty or self._looking)

    async def reconcile(self, key: str) -> bool:
        """Make the roster ``key``'s metad publishes the record's member URLs; True if written.

        Only a ready record is published (its members' addresses are known, its metad answers);
        a record gone or still being made is left alone: nothing serves its agents yet.
        """
        kv = await self.store.get(key)
        if kv is None:
            return False
        record = MetadataCluster.opened(kv.value, self.metadata.sealer)
        if record.status != "ready" or not record.ip:
            return False
        urls = record.instance_urls
        if record.issuer_pem and not record.holds_issuer_key:
            await self.metadata.management()  # what the client presents to metad
        await self.metadata.reach(record, await self._definition(record.runtime))
        client = self.metadata.client(record)
        async with asyncio.timeout(LOOK_TIMEOUT):
            if roster.published(await client.get_data(roster.KEY)) == urls:
                return False
            await client.post_data(roster.KEY, roster.document(urls))
        self.published += 1
        self.log.info("metadata roster published", owner=record.owner, runtime=record.runtime, urls=urls)
        return True

    async def _definition(self, name: str) -> Runtime | None:
        kv = await self.store.get(runtime_key(name))
        return Runtime.model_validate_json(kv.value) if kv else None

    def _mark(self, key: str) -> None:
        self._dirty.add(key)
        self._due.pop(key, None)  # a change is looked at now, whatever the backoff said
        self._wake.set()

    async def _follow(self, revision: int) -> None:
        while True:
            try:
                async for batch in self.store.watch_prefix(METADATA_CLUSTERS, revision):
                    revision = batch.revision + 1
                    for kv in batch.state:  # a resync: every record as it is now
                        self._mark(kv.key)
                    for event in batch.events:
                        self._mark(event.key)
            except Exception as exc:
                if self.store.closed:
                    return
                self.log.warning("metadata records watch broken; resuming", error=str(exc))
                await asyncio.sleep(RETRY_FIRST)

    async def _work(self) -> None:
        gate = asyncio.Semaphore(PARALLEL)
        while True:
            now = time.monotonic()
            due = sorted(k for k in self._dirty if self._due.get(k, 0.0) <= now)
            if not due:
                later = [self._due[k] - now for k in self._dirty if k in self._due]
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(later) if later else None):
                        await self._wake.wait()
                continue
            self._dirty.difference_update(due)
            self._looking.update(due)
            await asyncio.gather(*(self._look(key, gate) for key in due))
            async with self.settled:
                self.settled.notify_all()

    async def _look(self, key: str, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever failed, the record is looked at again later
                backoff = self._backoffs.setdefault(key, Backoff(*self._retry))
                delay = backoff.next()
                self.log.warning(
                    "metadata roster not published; retrying", key=key, error=str(exc), delay=delay
                )
                self._dirty.add(key)
                self._due[key] = time.monotonic() + delay
            else:
                self._backoffs.pop(key, None)
            finally:
                self._looking.discard(key)
                self.looks += 1
