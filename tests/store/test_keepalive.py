"""One keep-alive stream renewing many leases: each caller gets its own lease's answer."""

from __future__ import annotations

import asyncio

from pitrix.store import Store, StoreError
from pitrix.store.embedded import EmbeddedEtcd
from pitrix.store.keepalive import SharedKeepAlive


async def test_many_leases_renewed_at_once_over_one_stream(store: Store) -> None:
    granted = [await store.grant_lease(ttl) for ttl in range(3, 43)]
    gone, _ = await store.grant_lease(5)
    assert await store.revoke_lease(gone)
    keepalive = SharedKeepAlive(store)
    try:
        ids = [lease_id for lease_id, _ttl in granted]
        # Interleaved and repeated: every answer must be the TTL of the lease its caller asked for.
        answers = await asyncio.gather(*(keepalive.refresh(i) for i in [*ids, gone, *reversed(ids)]))
        expected = [ttl for _id, ttl in granted]
        assert answers == [*expected, 0, *reversed(expected)]
        first_stream = keepalive._call
        assert await keepalive.refresh(ids[0]) == granted[0][1]
        assert keepalive._call is first_stream  # not a stream per renewal
    finally:
        await keepalive.close()
        for lease_id, _ttl in granted:
            await store.revoke_lease(lease_id)


async def test_renewals_go_on_after_etcd_restarts(private_etcd: EmbeddedEtcd, private_store: Store) -> None:
    lease_id, ttl = await private_store.grant_lease(30)
    keepalive = SharedKeepAlive(private_store)
    try:
        assert await keepalive.refresh(lease_id) == ttl
        await private_etcd.stop()
        await private_etcd.start()
        # The old stream died with etcd: a renewal fails at most until a new stream is up.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:
            try:
                assert await keepalive.refresh(lease_id) == ttl
                break
            except StoreError:
                assert loop.time() < deadline, "no renewal went through after the restart"
        await keepalive.close()
        # Closed is not final: the next renewal opens a stream again.
        assert await keepalive.refresh(lease_id) == ttl
    finally:
        await keepalive.close()
