"""Heartbeat leases: an agent's heartbeat key lives only as long as the agent keeps beating.

metad does not keep these leases alive itself (that would outlive a dead agent); each heartbeat
refreshes its instance's lease, and a lease that expired or was lost with a metad restart is
granted anew. One lease per instance, reused, so a heartbeat costs one keepalive and one put.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from pitrix.logs import get_logger
from pitrix.store import Store, StoreError


@dataclass(slots=True)
class _Held:
    lease_id: int
    ttl: int


class HeartbeatLeases:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._held: dict[str, _Held] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._log = get_logger("pitrix.metad.leases")

    @staticmethod
    def ttl_for(interval: float) -> int:
        return max(3, math.ceil(3 * interval))

    async def beat(self, instance_id: str, key: str, value: str, interval: float) -> int:
        """Write ``key`` under the instance's (refreshed or new) lease; returns the write's revision."""
        ttl = self.ttl_for(interval)
        lock = self._locks.setdefault(instance_id, asyncio.Lock())
        async with lock:
            lease_id = await self._refreshed(instance_id, ttl)
            try:
                return await self.store.put(key, value, lease=lease_id)
            except StoreError:
                # The lease may have expired between refresh and put: grant anew once.
                self._held.pop(instance_id, None)
                lease_id = await self._refreshed(instance_id, ttl)
                return await self.store.put(key, value, lease=lease_id)

    async def _refreshed(self, instance_id: str, ttl: int) -> int:
        held = self._held.get(instance_id)
        client = self.store.client
        if held is not None and held.ttl == ttl:
            try:
                reply = await client.refresh_lease(held.lease_id)
            except Exception as exc:  # aetcd raises its own error types; any failure means "grant anew"
                self._log.debug("lease refresh failed", instance_id=instance_id, error=str(exc))
                reply = None
            if reply is not None and int(getattr(reply, "TTL", 0)) > 0:
                return held.lease_id
        try:
            lease = await client.lease(ttl)
        except Exception as exc:
            raise StoreError(f"lease grant for {instance_id}: {exc}") from exc
        self._held[instance_id] = _Held(int(lease.id), ttl)
        return int(lease.id)

    def forget(self, instance_id: str) -> None:
        self._held.pop(instance_id, None)
        self._locks.pop(instance_id, None)
