"""Heartbeat leases: an agent's heartbeat key lives only as long as the agent keeps beating.

metad does not keep these leases alive itself (that would outlive a dead agent); each heartbeat
refreshes its instance's lease, and a lease that expired or was lost with a metad restart is
granted anew. One lease per instance, reused, renewed over one keep-alive stream shared by all.

A beat that tells nothing new (the same agent process, version and interval as the document
this metad last wrote, and that document is still the key's value) only renews the lease: it
writes nothing, so nobody watching status keys (this metad's mirror, pitrixd) hears of it. At a
few thousand agents those writes were most of the metadata cluster's CPU, and each one woke
every watcher of the owner's status keys, for no news: the key's presence is the liveness.

A first beat (no lease on record: a new agent, or every agent after a metad restart) costs a
grant and a put; a renewal costs one message on the shared keep-alive stream. When clusters are
created by the hundred, their agents' first beats came together and queued past the store's
deadline: every one then failed after waiting 5 s, each was sent again by its agent, and metad
answered hardly any (300 one-node clusters, docs/benchmarks.md "Replicas"). So:

- the puts of beats go to etcd together (``GroupedPuts``: the beats that arrive while one
  transaction is in flight leave in the next one), the grants concurrently over the one channel;
- at most ``max_granting`` first beats are under way at once; one past that is refused at once
  with ``Busy`` (the API answers 503 and ``Retry-After``), which costs metad nothing of the
  store, and the agent asks again after that many seconds, jittered. ``Retry-After`` grows with
  the first beats refused in the last second, so a burst comes back spread over several seconds.
  Renewals are never refused: the key's presence is the agent's liveness, a renewal refused for
  three intervals would make a live agent silent, and it costs one stream message.

Liveness is unchanged: one lease per instance, of three intervals, renewed only by that
instance's beats; a dead agent's key still vanishes within three intervals of its last beat.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from pitrix.logs import get_logger
from pitrix.store import Store, StoreError, StoreUnavailable
from pitrix.store.grouped import GroupedPuts
from pitrix.store.keepalive import SharedKeepAlive

# First beats under way at once before more are refused (``Busy``): enough to keep etcd's
# pipeline full (a grant and a put take a few ms there), few enough that the ones admitted
# finish well within the store's deadline on a metad that has a share of one core.
MAX_GRANTING = 32
# The longest ``Retry-After`` asked of a refused first beat (seconds): the runtime waits 120 s
# for a new node's first heartbeat.
MAX_RETRY_AFTER = 15


class Busy(Exception):
    """A first beat refused because ``max_granting`` are under way: ask again after ``retry_after`` s."""

    def __init__(self, instance_id: str, retry_after: int) -> None:
        super().__init__(f"heartbeat of {instance_id}: busy with first beats, retry after {retry_after}s")
        self.retry_after = retry_after


@dataclass(slots=True)
class _Held:
    lease_id: int
    ttl: int
    written: str | None = None  # the value this metad last put under the lease


class HeartbeatLeases:
    def __init__(
        self,
        store: Store,
        max_granting: int = MAX_GRANTING,
        puts: GroupedPuts | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.keepalive = SharedKeepAlive(store)
        self.puts = puts if puts is not None else GroupedPuts(store)
        self.max_granting = max_granting
        self.granting = 0  # first beats under way now
        self.refused = 0  # first beats refused with Busy since start (the benchmark reads it)
        self._clock = clock
        self._refused_window = (0, 0)  # (second it counts, first beats refused in it)
        self._held: dict[str, _Held] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._log = get_logger("pitrix.metad.leases")

    @staticmethod
    def ttl_for(interval: float) -> int:
        return max(3, math.ceil(3 * interval))

    async def beat(
        self,
        instance_id: str,
        key: str,
        value: str,
        interval: float,
        *,
        news: bool = True,
        stored: str | None = None,
    ) -> int | None:
        """Refresh the instance's lease and write ``key`` under it; the write's revision, or None
        when nothing was written: ``news`` False says ``value`` only restates the one before, and
        ``stored`` (the key's value as far as this metad knows) is still what this metad wrote."""
        ttl = self.ttl_for(interval)
        held = self._held.get(instance_id)
        if held is None or held.ttl != ttl:
            return await self._first(instance_id, key, value, ttl, news, stored)
        return await self._locked(instance_id, key, value, ttl, news, stored)

    async def _first(
        self, instance_id: str, key: str, value: str, ttl: int, news: bool, stored: str | None
    ) -> int | None:
        """A beat that needs a grant: admitted while fewer than ``max_granting`` are under way."""
        if self.granting >= self.max_granting:
            raise Busy(instance_id, self._retry_after())
        self.granting += 1
        try:
            return await self._locked(instance_id, key, value, ttl, news, stored)
        finally:
            self.granting -= 1

    def _retry_after(self) -> int:
        """Seconds a refused first beat should wait: one more for every ``max_granting`` refused
        within the current second, so that a burst's retries come back spread out."""
        second = math.floor(self._clock())
        began, count = self._refused_window
        count = count + 1 if began == second else 1
        self._refused_window = (second, count)
        self.refused += 1
        return min(MAX_RETRY_AFTER, 1 + (count - 1) // max(1, self.max_granting))

    async def _locked(
        self, instance_id: str, key: str, value: str, ttl: int, news: bool, stored: str | None
    ) -> int | None:
        lock = self._locks.setdefault(instance_id, asyncio.Lock())
        try:
            # One deadline for the whole beat, the store's own: a refresh, a grant and a put each
            # waiting out the store's timeout on a dead etcd held a heartbeat past the agent's
            # request timeout, and the agent's next beat then queued behind it on the lock.
            async with asyncio.timeout(self.store.timeout), lock:
                return await self._beat(instance_id, key, value, ttl, news, stored)
        except TimeoutError:
            raise StoreUnavailable(
                f"heartbeat of {instance_id}: etcd did not answer within {self.store.timeout:g}s"
            ) from None

    async def _beat(
        self, instance_id: str, key: str, value: str, ttl: int, news: bool, stored: str | None
    ) -> int | None:
        held = await self._refreshed(instance_id, ttl)
        if not news and held.written is not None and stored == held.written:
            return None
        try:
            revision = await self.puts.put(key, value, lease=held.lease_id)
        except StoreUnavailable:
            raise
        except StoreError:
            # The lease may have expired between refresh and put: grant anew once.
            self._held.pop(instance_id, None)
            held = await self._refreshed(instance_id, ttl)
            revision = await self.puts.put(key, value, lease=held.lease_id)
        held.written = value
        return revision

    async def _refreshed(self, instance_id: str, ttl: int) -> _Held:
        held = self._held.get(instance_id)
        if held is not None and held.ttl == ttl:
            try:
                left = await self.keepalive.refresh(held.lease_id)
            except StoreError as exc:  # any failure means "grant anew"
                self._log.debug("lease refresh failed", instance_id=instance_id, error=str(exc))
                left = 0
            if left > 0:
                return held
        try:
            lease_id, _granted = await self.store.grant_lease(ttl)
        except StoreError as exc:
            raise StoreError(f"lease grant for {instance_id}: {exc}") from exc
        held = self._held[instance_id] = _Held(lease_id, ttl)
        return held

    def holds(self, instance_id: str) -> bool:
        """Whether a lease is kept on record for the instance."""
        return instance_id in self._held

    def forget(self, instance_id: str) -> None:
        """Drop an instance that is gone (its mapping deleted): its lease is left to expire,
        its heartbeat with it, and a long-lived metad does not keep every instance it ever saw."""
        self._held.pop(instance_id, None)
        self._locks.pop(instance_id, None)

    async def close(self) -> None:
        await self.keepalive.close()
