"""Group commit on a real etcd: puts that arrive together leave together, each answered once stored."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pitrix.store import Store, StoreError
from pitrix.store.grouped import GroupedPuts


class Watched(GroupedPuts):
    """Tells when its first transaction has left."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.sent = asyncio.Event()

    async def _commit(self, batch: list[Any]) -> None:
        self.sent.set()
        await super()._commit(batch)


async def in_flight(puts: Watched) -> None:
    await asyncio.wait_for(puts.sent.wait(), 10)


async def test_a_lone_put_goes_out_alone(store: Store) -> None:
    puts = GroupedPuts(store)
    revision = await puts.put("/s/a", "1")
    kv = await store.get("/s/a")
    assert kv is not None and kv.value == b"1" and kv.mod_revision == revision
    assert puts.transactions == 1


async def test_concurrent_puts_share_transactions(store: Store) -> None:
    puts = Watched(store)
    first = asyncio.ensure_future(puts.put("/s/k0", "0"))
    await in_flight(puts)
    # While the first is in flight, the other 59 queue behind it and leave together.
    revisions = [await first, *await asyncio.gather(*(puts.put(f"/s/k{n}", str(n)) for n in range(1, 60)))]
    assert puts.transactions == 2
    assert len(set(revisions)) == 2
    kvs, _ = await store.get_prefix("/s/")
    assert {kv.key: kv.value for kv in kvs} == {f"/s/k{n}": str(n).encode() for n in range(60)}
    for n, revision in enumerate(revisions):
        assert kvs[[kv.key for kv in kvs].index(f"/s/k{n}")].mod_revision == revision


async def test_the_newest_value_of_a_key_wins(store: Store) -> None:
    puts = Watched(store)
    first = asyncio.ensure_future(puts.put("/s/x", "first"))
    await in_flight(puts)
    rest = [asyncio.ensure_future(puts.put("/s/y", v)) for v in ("a", "b", "c")]
    await asyncio.gather(first, *rest)
    kv = await store.get("/s/y")
    assert kv is not None and kv.value == b"c"
    assert len({r.result() for r in rest}) == 1  # one transaction wrote the key once


async def test_batches_stay_within_etcds_operation_limit(store: Store) -> None:
    puts = GroupedPuts(store, max_ops=128)
    await asyncio.gather(*(puts.put(f"/s/m{n}", "v") for n in range(300)))
    assert puts.transactions == 3  # 128 + 128 + 44
    kvs, _ = await store.get_prefix("/s/")
    assert len(kvs) == 300


async def test_a_failed_transaction_fails_its_puts_only(store: Store) -> None:
    puts = Watched(store)
    lone = asyncio.ensure_future(puts.put("/s/first", "ok"))
    await in_flight(puts)
    # etcd refuses a request over 1.5 MiB: the transaction carrying this value fails whole.
    doomed = [asyncio.ensure_future(puts.put("/s/big", b"x" * (2 << 20)))]
    doomed += [asyncio.ensure_future(puts.put(f"/s/d{n}", "v")) for n in range(3)]
    assert await lone > 0
    for put in doomed:
        with pytest.raises(StoreError):
            await put
    assert await store.get("/s/d0") is None
    assert await puts.put("/s/after", "ok") > 0  # the writer goes on


async def test_a_caller_that_goes_away_does_not_unwrite_the_rest(store: Store) -> None:
    puts = Watched(store)
    lone = asyncio.ensure_future(puts.put("/s/first", "1"))
    await in_flight(puts)
    gone = asyncio.ensure_future(puts.put("/s/gone", "2"))
    kept = asyncio.ensure_future(puts.put("/s/kept", "3"))
    await asyncio.sleep(0)  # both queued
    gone.cancel()
    await asyncio.gather(lone, kept)  # the same transaction as the cancelled put's
    assert (await store.get("/s/gone")) is not None and (await store.get("/s/kept")) is not None
