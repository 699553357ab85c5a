"""Hundreds of watches on one store leave its other calls unhurried.

On one gRPC channel to etcd, past about 200 streams every further call on that channel waited
out its deadline unsent. pitrixd opens a watch per queued lock waiter (on its predecessor) and
one per holder (its own key), so 300 creates queued on one lock would have stalled every call
of its store. The store runs its watches on channels of their own instead (watch_pool.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest
from store_helpers import eventually, watchers

from pitrix.store import Lock, Store, StoreError
from pitrix.store.embedded import EmbeddedEtcd

WAITERS = 300


async def test_three_hundred_lock_waiters_leave_puts_and_gets_unhurried(
    private_etcd: EmbeddedEtcd, private_store: Store
) -> None:
    store = private_store
    holder = store.lock("busy")
    await holder.acquire()
    taken: list[int] = []  # each waiter's fencing revision, in the order it got the lock
    inside: list[int] = []
    overlaps: list[list[int]] = []
    go = asyncio.Event()

    async def waiter(lock: Lock) -> None:
        await lock.acquire()
        try:
            inside.append(lock.revision)
            if len(inside) > 1:
                overlaps.append(list(inside))
            taken.append(lock.revision)
            await go.wait()  # every waiter but the first finds it set: only the first is held up
            inside.remove(lock.revision)
        finally:
            await lock.release()

    locks = [store.lock("busy") for _ in range(WAITERS)]
    tasks = [asyncio.ensure_future(waiter(lock)) for lock in locks]
    try:
        # Every waiter has its watch on its predecessor open in etcd, and the holder one on its key.
        # On one shared channel the creates past ~200 were never sent: this never held.
        await eventually(lambda: _at_least(watchers(private_etcd), WAITERS + 1), within=60)
        assert store.watch_pool.channels == 4  # at most 100 a channel
        # Each of these waited out the store's timeout (StoreUnavailable) on the shared channel.
        revision = await store.put("/elsewhere", b"1")
        got = await store.get("/elsewhere")
        assert got is not None and got.mod_revision == revision
        assert taken == []  # nobody jumped the holder

        await holder.release()
        go.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # Handed down the queue in the order it formed, one holder at a time.
    assert len(taken) == WAITERS
    assert taken == sorted(taken) and taken[0] > holder.revision
    assert overlaps == []
    await eventually(lambda: _none_left(private_etcd))
    assert store.watch_pool.channels == 0  # each closed when it carried no watch any more


async def test_a_closed_store_closes_its_watch_channels(private_store: Store) -> None:
    store = private_store
    start = await store.put("/w", b"1")
    watch = store.watch_prefix("/", start)
    assert (await asyncio.wait_for(anext(watch), 10)).revision == start
    assert store.watch_pool.channels == 1 and store.watch_pool.streams == 1
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0)  # the watch is back on its stream
    await store.close()
    assert store.watch_pool.channels == 0
    with pytest.raises(StoreError):  # the watch ends with the store, as on the store's own channel
        await asyncio.wait_for(pending, 10)


async def _at_least(value: Awaitable[int], expected: int) -> bool:
    return await value >= expected


async def _none_left(etcd: EmbeddedEtcd) -> bool:
    return await watchers(etcd) == 0
