"""A Store outlives its etcd restarting, and fails over between endpoints."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pitrix.store import Store, StoreUnavailable
from pitrix.store.embedded import EmbeddedEtcd
from pitrix.store.tls import EtcdTLS


def dead_endpoint() -> str:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"https://127.0.0.1:{sock.getsockname()[1]}"


async def test_next_call_after_etcd_restart_just_works(private_etcd: EmbeddedEtcd) -> None:
    async with Store([private_etcd.client_url], prefix="/re", tls=private_etcd.client_tls) as store:
        await store.put("/a", b"1")
        generation = store.generation
        await private_etcd.stop()
        await private_etcd.start()
        # No exception on the first calls after the restart: reads and writes.
        kv = await store.get("/a")
        assert kv is not None and kv.value == b"1"
        assert await store.put("/b", b"2") > kv.mod_revision
        assert await store.create("/c", b"3") is True
        assert store.generation >= generation


async def test_calls_while_etcd_is_down_fail_clearly_within_the_timeout(private_etcd: EmbeddedEtcd) -> None:
    loop = asyncio.get_running_loop()
    async with Store([private_etcd.client_url], timeout=1.0, tls=private_etcd.client_tls) as store:
        await store.put("/x", b"1")
        await private_etcd.stop()
        for call in (store.get("/x"), store.put("/x", b"2"), store.txn([], [])):
            began = loop.time()
            with pytest.raises(StoreUnavailable, match="unavailable"):
                await call
            assert loop.time() - began < 3.0
        await private_etcd.start()
        assert (await store.get("/x")) is not None


async def test_a_dead_first_endpoint_fails_over_to_the_next(etcd_url: str, etcd_tls: EtcdTLS) -> None:
    async with Store([dead_endpoint(), etcd_url], prefix="/failover", tls=etcd_tls) as store:
        assert store.endpoint != etcd_url
        revision = await store.put("/k", b"v")  # never reached the dead one: safe to retry elsewhere
        assert store.endpoint == etcd_url
        kv = await store.get("/k")
        assert kv is not None and kv.mod_revision == revision
        await store.delete("/k")


async def test_watch_rotates_back_to_the_endpoint_that_returns(private_etcd: EmbeddedEtcd) -> None:
    """Rotation wraps around: with the live endpoint gone, the watch tries the next, then comes back."""
    async with Store(
        [private_etcd.client_url, dead_endpoint()], prefix="/wf", tls=private_etcd.client_tls
    ) as store:
        start = await store.put("/k", b"0")
        watch = store.watch_prefix("/", start)
        first = await asyncio.wait_for(anext(watch), 5)
        assert first.revision == start
        await private_etcd.stop()
        restarted = asyncio.ensure_future(private_etcd.start())
        await asyncio.wait_for(restarted, 30)
        rev = await store.put("/k", b"1")
        batch = await asyncio.wait_for(anext(watch), 10)
        assert batch.revision == rev
        await watch.aclose()  # type: ignore[attr-defined]


async def test_channel_swap_under_a_live_watch_and_reads_is_invisible(
    etcd_url: str, etcd_tls: EtcdTLS
) -> None:
    """gRPC reports a closed channel as CancelledError; no watch or read may take it for its own."""
    async with Store([etcd_url], prefix="/swap", tls=etcd_tls) as store:
        start = await store.put("/a", b"1")
        watch = store.watch_prefix("/", start)
        assert (await asyncio.wait_for(anext(watch), 5)).revision == start
        pending_event = asyncio.ensure_future(anext(watch))
        reads = [asyncio.ensure_future(store.get_prefix("/")) for _ in range(20)]
        await asyncio.sleep(0)  # one turn of the loop: the reads are now in flight on the old channel
        await store.reconnect()
        (channel,) = store.watch_pool.stores  # the watch's own channel, apart from the reads'
        await channel.reconnect()
        for read in reads:
            kvs, _ = await asyncio.wait_for(read, 5)
            assert [kv.key for kv in kvs] == ["/a"]
        rev = await store.put("/b", b"2")
        batch = await asyncio.wait_for(pending_event, 5)
        assert batch.revision == rev
        await watch.aclose()  # type: ignore[attr-defined]


async def test_one_endpoint_is_not_reconnected_again_and_again(etcd_url: str, etcd_tls: EtcdTLS) -> None:
    """While etcd is down every failing call asks for a new channel; with one endpoint a new one
    only repeats the same connection attempt, so swaps come at most every half second."""
    async with Store([etcd_url], prefix="/cooldown", tls=etcd_tls) as store:
        first = store.generation
        await store.reconnect(first)
        assert store.generation == first + 1
        await store.reconnect(first + 1)  # a call failing on the new channel at once
        assert store.generation == first + 1
        await store.reconnect()  # an explicit reconnect is always done
        assert store.generation == first + 2
        assert await store.put("/k", b"v") > 0


async def test_a_watch_channel_starts_at_the_endpoint_the_store_failed_over_to(
    private_etcd: EmbeddedEtcd,
) -> None:
    """A store's watches run on channels of their own (watch_pool.py); one opened after the store
    left a dead endpoint starts at the live one instead of failing over again by itself."""
    live = private_etcd.client_url
    async with Store([dead_endpoint(), live], prefix="/pool", tls=private_etcd.client_tls) as store:
        start = await store.put("/k", b"0")  # fails over to the live endpoint on the way
        assert store.endpoint == live
        watch = store.watch_prefix("/", start)
        assert (await asyncio.wait_for(anext(watch), 10)).revision == start
        (channel,) = store.watch_pool.stores
        assert channel.endpoint == live and channel.generation == 0  # no failover of its own
        await watch.aclose()  # type: ignore[attr-defined]
