"""A lease that stays alive exactly as long as its holder does.

aetcd never renews a lease by itself, so whoever holds keys on one (locks, elections, an agent's
heartbeat) needs a task that does. When renewal fails for longer than the lease could survive,
the holder must stop acting on what the lease guarded: ``lost`` says so, set at the moment the
lease has expired as far as this process can know (the last confirmed TTL ran out, or etcd said
the lease no longer exists).
"""

from __future__ import annotations

import asyncio

from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger
from pitrix.store.client import Store, StoreError

MIN_INTERVAL = 0.1


class KeptLease:
    """``async with store.lease(ttl) as lease:`` grants, renews every ~ttl/3, revokes on exit."""

    def __init__(self, store: Store, ttl: int) -> None:
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
            raise StoreError(f"ttl: expected whole seconds >= 1, got {ttl!r}")
        self.store = store
        self.ttl = ttl
        self.granted_ttl = 0
        self.renewals = 0
        self.lost = asyncio.Event()
        self._id: int | None = None
        self._expires_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._renewed = asyncio.Condition()
        self._log = get_logger("pitrix.store.lease", prefix=store.prefix, ttl=ttl)

    @property
    def id(self) -> int:
        if self._id is None:
            raise StoreError("lease is not granted yet")
        return self._id

    @property
    def active(self) -> bool:
        return self._id is not None and not self.lost.is_set()

    async def grant(self) -> KeptLease:
        """Grant the lease and start keeping it alive (what ``async with`` does on entry)."""
        if self._id is not None:
            raise StoreError("lease is already granted")
        loop = asyncio.get_running_loop()
        asked = loop.time()
        self._id, self.granted_ttl = await self.store.grant_lease(self.ttl)
        self._expires_at = asked + self.granted_ttl
        self._log = self._log.bind(lease=f"{self._id:x}")
        self._task = loop.create_task(self._keep_alive(), name=f"lease-{self._id:x}")
        self._log.debug("lease.granted", granted_ttl=self.granted_ttl)
        return self

    async def revoke(self) -> None:
        """Stop renewing and revoke (idempotent; a lease etcd cannot be told about just expires)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        lease_id, self._id = self._id, None
        if lease_id is None:
            return
        try:
            await self.store.revoke_lease(lease_id)
        except StoreError as exc:
            self._log.warning("lease.revoke_failed", error=str(exc))

    async def wait_renewed(self, count: int) -> None:
        """Until the lease has been renewed ``count`` times in all (for callers proving liveness)."""
        async with self._renewed:
            await self._renewed.wait_for(lambda: self.renewals >= count or self.lost.is_set())
        if self.lost.is_set() and self.renewals < count:
            raise StoreError(f"lease {self.id:x} lost after {self.renewals} renewals")

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(self.granted_ttl / 3, MIN_INTERVAL)
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            remaining = self._expires_at - loop.time()
            if remaining <= 0:
                await self._lose("not renewed within its TTL")
                return
            sent = loop.time()
            try:
                # Not asyncio.wait_for: on 3.11 it swallows a cancel that arrives once the renewal
                # is done but before wait_for has resumed (after a stalled loop, both land in one
                # turn), and revoke() would then wait for this task for good.
                async with asyncio.timeout(remaining):
                    ttl = await self.store.refresh_lease(self.id)
            except TimeoutError:
                await self._lose("etcd did not answer before the lease ran out")
                return
            except StoreError as exc:
                self._log.info("lease.renew_failed", error=str(exc), seconds_left=round(remaining, 2))
                next_at = loop.time() + min(interval, max(MIN_INTERVAL, remaining / 4))
                continue
            if ttl <= 0:
                await self._lose("etcd no longer knows the lease (expired or revoked)")
                return
            self._expires_at = sent + ttl
            next_at = sent + interval
            async with self._renewed:
                self.renewals += 1
                self._renewed.notify_all()

    async def _lose(self, reason: str) -> None:
        self._log.warning("lease.lost", reason=reason)
        self.lost.set()
        async with self._renewed:
            self._renewed.notify_all()  # there will be no more renewals to wait for

    async def __aenter__(self) -> KeptLease:
        return await self.grant()

    async def __aexit__(self, *exc: object) -> None:
        await self.revoke()
