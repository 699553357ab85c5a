"""Kept leases: alive while kept, gone when not, and ``lost`` when they slip away."""

from __future__ import annotations

import asyncio

import pytest
from store_helpers import Collector

from pitrix.store import Store, StoreError
from pitrix.store.embedded import EmbeddedEtcd
from pitrix.store.lease import KeptLease


async def test_kept_lease_outlives_several_ttls(store: Store) -> None:
    loop = asyncio.get_running_loop()
    async with store.lease(2) as lease:
        started = loop.time()
        await store.put("/alive", b"yes", lease=lease.id)
        # ~ttl/3 between renewals: ten renewals span more than three TTLs.
        await asyncio.wait_for(lease.wait_renewed(10), 15)
        assert loop.time() - started > 3 * lease.granted_ttl
        assert not lease.lost.is_set()
        kv = await store.get("/alive")
        assert kv is not None and kv.lease == lease.id
        assert await store.lease_ttl(lease.id) > 0
        lease_id = lease.id
    # Leaving revokes: the key goes at once, not after the TTL.
    assert await store.get("/alive") is None
    assert await store.lease_ttl(lease_id) == -1


async def test_unkept_lease_expires_and_takes_its_keys(store: Store) -> None:
    lease_id, ttl = await store.grant_lease(2)
    start = await store.put("/mortal", b"x", lease=lease_id)
    collector = Collector(store.watch_prefix("/mortal", start))
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        batches = await collector.wait_for(2, within=ttl + 5)
    finally:
        await collector.close()
    assert batches[1].events[0].type == "delete"
    assert loop.time() - began >= ttl - 1  # etcd expires leases on its own schedule, not before the TTL
    assert await store.lease_ttl(lease_id) == -1


async def test_lease_revoked_elsewhere_is_reported_lost(store: Store, etcd_url: str) -> None:
    async with store.lease(3) as lease, Store([etcd_url], tls=store.tls) as other:
        assert await other.revoke_lease(lease.id)
        await asyncio.wait_for(lease.lost.wait(), 5)
        assert not lease.active
        with pytest.raises(StoreError, match="lost"):
            await lease.wait_renewed(lease.renewals + 1)


async def test_lease_lost_when_etcd_stays_down_past_the_ttl(
    private_etcd: EmbeddedEtcd, private_store: Store
) -> None:
    loop = asyncio.get_running_loop()
    async with private_store.lease(2) as lease:
        await lease.wait_renewed(1)
        await private_etcd.stop()
        stopped = loop.time()
        await asyncio.wait_for(lease.lost.wait(), 10)
        # Not before the last confirmed TTL ran out (it was renewed at most ttl/3 before the stop).
        assert loop.time() - stopped >= lease.granted_ttl * 2 / 3 - 0.2
        await private_etcd.start()
    # Revoking a lease that etcd already forgot (or cannot reach) must not raise on exit.


async def test_lease_survives_a_short_etcd_restart(private_etcd: EmbeddedEtcd, private_store: Store) -> None:
    async with private_store.lease(3) as lease:
        await private_store.put("/kept", b"1", lease=lease.id)
        await private_etcd.stop()
        await private_etcd.start()
        renewed = lease.renewals
        await asyncio.wait_for(lease.wait_renewed(renewed + 2), 15)
        assert not lease.lost.is_set()
        assert await private_store.get("/kept") is not None


async def test_lease_refuses_bad_ttl(store: Store) -> None:
    with pytest.raises(StoreError, match=r"^ttl"):
        KeptLease(store, 0)
    lease = KeptLease(store, 5)
    with pytest.raises(StoreError, match="not granted"):
        _ = lease.id


async def test_revoke_ends_even_when_its_cancel_meets_a_finished_renewal(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After the event loop stalled (a long synchronous log render under load), a renewal's answer
    # and revoke()'s cancel land in the same loop turn. Python 3.11's wait_for then returned the
    # renewal and dropped the cancel: the keep-alive went on renewing and revoke() (a lock's
    # release) waited for it for good. Here revoke is started by the renewal itself, just as the
    # renewal finishes, so its cancel always meets a finished renewal.
    lease = KeptLease(store, 1)
    real_refresh = store.refresh_lease
    revoking: asyncio.Future[None] | None = None

    async def refresh_then_revoke(lease_id: int) -> int:
        nonlocal revoking
        ttl = await real_refresh(lease_id)
        if revoking is None:
            revoking = asyncio.ensure_future(lease.revoke())
        return ttl

    monkeypatch.setattr(store, "refresh_lease", refresh_then_revoke)
    await lease.grant()
    lease_id = lease.id
    try:
        async with asyncio.timeout(15):
            await lease.wait_renewed(1)
            assert revoking is not None
            # Shielded: revoke() itself swallows a cancel of its caller, which would hide the hang.
            await asyncio.shield(revoking)  # hung for good before the fix
    finally:
        monkeypatch.undo()
        await lease.revoke()
    assert await store.lease_ttl(lease_id) == -1
    assert not lease.active
