"""Heartbeat leases: an agent's heartbeat key lives only as long as the agent keeps beating.

metad does not keep these leases alive itself (that would outlive a dead agent); each heartbeat
refreshes its instance's lease, and a lease that expired or was lost with a metad restart is
granted anew. One lease per instance, reused, renewed over one keep-alive stream shared by all.

A beat that tells nothing new (the same agent process, version and interval as the document
this metad last wrote, and that document is still the key's value) only renews the lease: it
writes nothing, so nobody watching status keys (this metad's mirror, pitrixd) hears of it. At a
few thousand agents those writes were most of the metadata cluster's CPU, and each one woke
every watcher of the owner's status keys, for no news: the key's presence is the liveness.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from pitrix.logs import get_logger
from pitrix.store import Store, StoreError, StoreUnavailable
from pitrix.store.keepalive import SharedKeepAlive


@dataclass(slots=True)
class _Held:
    lease_id: int
    ttl: int
    written: str | None = None  # the value this metad last put under the lease


class HeartbeatLeases:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.keepalive = SharedKeepAlive(store)
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
            revision = await self.store.put(key, value, lease=held.lease_id)
        except StoreError:
            # The lease may have expired between refresh and put: grant anew once.
            self._held.pop(instance_id, None)
            held = await self._refreshed(instance_id, ttl)
            revision = await self.store.put(key, value, lease=held.lease_id)
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
