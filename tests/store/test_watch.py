"""Watches: per-revision batches, exact resume across etcd restarts, resync after compaction."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import pytest
from aetcd import rpc
from grpc.aio import AioRpcError
from store_helpers import Collector, eventually, watchers

from pitrix.store import Store, StoreError, WatchBatch
from pitrix.store.client import StoreUnavailable, send_on_stream
from pitrix.store.embedded import EmbeddedEtcd
from pitrix.store.tls import EtcdTLS
from pitrix.store.watch import follow, watch_key


def flat(batches: list) -> list[tuple[str, str, bytes, int]]:
    return [(e.type, e.key, e.value, e.revision) for b in batches for e in b.events]


async def test_one_batch_per_revision_from_a_past_revision(store: Store) -> None:
    first = await store.put("/w/a", b"1")
    await store.put("/elsewhere", b"x")
    many = await store.put_many([("/w/b", b"2"), ("/w/c", b"3")])
    gone = await store.txn([], [__import__("pitrix.store", fromlist=["Op"]).Op("delete", "/w/a")])
    collector = Collector(store.watch_prefix("/w/", first))
    try:
        batches = await collector.wait_for(3)
    finally:
        await collector.close()
    assert [b.revision for b in batches] == [first, many, gone.revision]
    assert not any(b.resync for b in batches)
    assert flat(batches) == [
        ("put", "/w/a", b"1", first),
        ("put", "/w/b", b"2", many),
        ("put", "/w/c", b"3", many),
        ("delete", "/w/a", b"", gone.revision),
    ]


async def test_from_now_skips_history(store: Store) -> None:
    await store.put("/n/old", b"old")
    collector = Collector(store.watch_prefix("/n/"))
    try:
        # "Now" is fixed when the watch first runs, which the test cannot observe: write until it sees one.
        async def write_until_seen() -> None:
            i = 0
            while not collector.batches:
                await store.put(f"/n/new{i}", b"new")
                i += 1
                with contextlib.suppress(TimeoutError):
                    await collector.wait_for(1, within=0.2)

        await asyncio.wait_for(write_until_seen(), 10)
    finally:
        await collector.close()
    keys = [e.key for b in collector.batches for e in b.events]
    assert keys and "/n/old" not in keys
    assert all(key.startswith("/n/new") for key in keys)


async def test_watch_key_is_exact(store: Store) -> None:
    start = await store.revision() + 1
    await store.put("/lock/ab", b"sibling")
    rev = await store.put("/lock/a", b"me")
    collector = Collector(watch_key(store, "/lock/a", start))
    try:
        batches = await collector.wait_for(1)
    finally:
        await collector.close()
    assert flat(batches) == [("put", "/lock/a", b"me", rev)]


async def test_bad_from_revision_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="from_revision"):
        await anext(store.watch_prefix("/w/", 0))


async def test_watch_survives_etcd_restart_without_loss_or_repeat(
    private_etcd: EmbeddedEtcd, private_store: Store
) -> None:
    store = private_store
    start = await store.put("/r/0", b"before")
    collector = Collector(store.watch_prefix("/r/", start))
    try:
        await store.put("/r/1", b"before")
        await collector.wait_for(2)
        pid = private_etcd.pid
        url = private_etcd.client_url
        await private_etcd.stop()
        assert await private_etcd.start() == url
        assert private_etcd.pid != pid
        # The store itself must work again on its next call, and the watch must resume.
        revs = [await store.put(f"/r/{i}", b"after") for i in range(2, 6)]
        await store.delete("/r/0")
        batches = await collector.wait_for(7)
    finally:
        await collector.close()
    assert [b.revision for b in batches] == list(range(start, start + 7))
    assert flat(batches)[2:6] == [
        ("put", f"/r/{i}", b"after", rev) for i, rev in zip(range(2, 6), revs, strict=True)
    ]
    assert flat(batches)[6][:2] == ("delete", "/r/0")
    assert len(collector.batches) == 7


async def test_watch_resumes_when_etcd_is_down_longer(
    private_etcd: EmbeddedEtcd, private_store: Store
) -> None:
    """The watcher retries while nothing answers, and still misses nothing written meanwhile by others."""
    store = private_store
    start = await store.revision() + 1
    collector = Collector(store.watch_prefix("/down/", start))
    try:
        await store.put("/down/a", b"1")
        await collector.wait_for(1)
        await private_etcd.stop()
        await private_etcd.start()
        async with Store([private_etcd.client_url], prefix="/private", tls=private_etcd.client_tls) as other:
            for i in range(20):
                await other.put(f"/down/{i}", str(i))
        batches = await collector.wait_for(21)
    finally:
        await collector.close()
    assert [b.revision for b in batches] == list(range(start, start + 21))


async def test_compacted_start_revision_resyncs_then_continues(private_store: Store) -> None:
    store = private_store
    start = await store.put("/c/a", b"1")
    await store.put("/c/b", b"2")
    await store.delete("/c/a")
    await store.put("/c/b", b"3")
    now = await store.put("/c/d", b"4")
    await store.compact(now)
    collector = Collector(store.watch_prefix("/c/", start))
    try:
        first = (await collector.wait_for(1))[0]
        assert first.resync
        assert first.revision == now
        assert first.events == []
        assert [(kv.key, kv.value) for kv in first.state] == [("/c/b", b"3"), ("/c/d", b"4")]
        after = await store.put("/c/e", b"5")
        batches = await collector.wait_for(2)
    finally:
        await collector.close()
    assert flat(batches[1:]) == [("put", "/c/e", b"5", after)]


async def test_closing_the_generator_cancels_the_etcd_watch(
    private_etcd: EmbeddedEtcd, private_store: Store
) -> None:
    store = private_store
    assert await watchers(private_etcd) == 0
    watch = store.watch_prefix("/g/", await store.revision() + 1)
    await store.put("/g/x", b"1")
    batch = await anext(watch)
    assert batch.events[0].key == "/g/x"
    assert await watchers(private_etcd) == 1
    await watch.aclose()  # type: ignore[attr-defined]
    await eventually(lambda: _is(watchers(private_etcd), 0))


async def test_cancelling_the_consumer_cancels_the_etcd_watch(
    private_etcd: EmbeddedEtcd, private_store: Store
) -> None:
    collector = Collector(private_store.watch_prefix("/g/", await private_store.revision() + 1))
    await private_store.put("/g/y", b"1")
    await collector.wait_for(1)
    assert await watchers(private_etcd) == 1
    await collector.close()
    await eventually(lambda: _is(watchers(private_etcd), 0))


async def _is(value: object, expected: int) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_exactly_once_under_load_across_an_etcd_crash(
    private_etcd: EmbeddedEtcd, private_store: Store
) -> None:
    """A writer keeps on while etcd is SIGKILLed and restarted; the watch sees every revision once."""

    store = private_store
    start = await store.revision() + 1
    collector = Collector(store.watch_prefix("/load/", start))
    written: list[int] = []
    crash_at = 150

    async def writer() -> None:
        async with Store([private_etcd.client_url], prefix="/private", tls=private_etcd.client_tls) as w:
            i = 0
            while len(written) < 300:
                try:
                    written.append(await w.put(f"/load/{i % 17}", str(i)))
                except StoreError:
                    continue  # down or ambiguous: etcd's own history is the reference, not this count
                i += 1

    async def crasher() -> None:
        await collector.wait_for(crash_at)
        pid = private_etcd.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await private_etcd.start()

    try:
        await asyncio.wait_for(asyncio.gather(writer(), crasher()), 60)
        last = await store.revision()
        batches = await collector.wait_for(last - start + 1, within=20)
    finally:
        await collector.close()
    revisions = [b.revision for b in batches]
    assert revisions == list(range(start, last + 1))
    assert set(written) <= set(revisions)
    assert len(collector.batches) == last - start + 1  # nothing after the end, nothing twice
    # Each batch agrees with etcd's record of that revision.
    for batch in batches[-5:]:
        (event,) = batch.events
        kv = await store.get(event.key)
        assert kv is not None and kv.mod_revision >= batch.revision


async def test_closing_the_store_ends_its_watches_with_an_error(etcd_url: str, etcd_tls: EtcdTLS) -> None:
    s = await Store.connect([etcd_url], prefix="/closing", tls=etcd_tls)
    watch = s.watch_prefix("/", await s.revision() + 1)
    pending = asyncio.ensure_future(anext(watch))
    await s.put("/x", b"1")
    assert (await asyncio.wait_for(pending, 5)).events[0].key == "/x"
    pending = asyncio.ensure_future(anext(watch))
    await s.delete("/x")
    await asyncio.wait_for(pending, 5)
    pending = asyncio.ensure_future(anext(watch))
    await s.close()
    with pytest.raises(StoreError, match="store is closed"):
        await asyncio.wait_for(pending, 5)


async def test_follow_hands_a_failed_batch_again_and_ends_with_the_store(
    etcd_url: str, etcd_tls: EtcdTLS
) -> None:
    """follow(): a batch its handler failed on comes again (nothing skipped), the failure is told
    with the pause before the next try, and closing the store ends it."""
    s = await Store.connect([etcd_url], prefix="/follow", tls=etcd_tls)
    first = await s.put("/a", b"1")
    await s.put("/b", b"2")
    seen: list[int] = []
    broken: list[tuple[str, float]] = []
    done: asyncio.Queue[int] = asyncio.Queue()

    async def handle(batch: WatchBatch) -> None:
        seen.append(batch.revision)
        if batch.revision == first + 1 and seen.count(batch.revision) == 1:
            raise RuntimeError("handler failed once")
        done.put_nowait(batch.revision)

    follower = asyncio.create_task(
        follow(s, "/", first, handle, on_broken=lambda exc, delay: broken.append((str(exc), delay)))
    )
    try:
        assert [await asyncio.wait_for(done.get(), 10) for _ in range(2)] == [first, first + 1]
        assert seen == [first, first + 1, first + 1]
        assert len(broken) == 1 and broken[0][0] == "handler failed once"
        assert 0.05 <= broken[0][1] <= 0.1  # the first pause, jittered
        third = await s.put("/c", b"3")
        assert await asyncio.wait_for(done.get(), 10) == third
    finally:
        await s.close()
    await asyncio.wait_for(follower, 10)  # ended, not stuck retrying a closed store
    assert len(broken) == 1


async def test_a_stream_request_cut_off_before_its_call_started_ends(
    etcd_url: str, etcd_tls: EtcdTLS
) -> None:
    """grpc.aio's write waits for the call's initial metadata to go out; on a channel closed before
    that (a reconnect right then) it never does, and a plain write waited for good: the watch's
    silent stall after an etcd restart. send_on_stream ends with the call, whichever came first."""
    s = await Store.connect([etcd_url], prefix="/cut", tls=etcd_tls)
    request = rpc.WatchRequest(create_request=rpc.WatchCreateRequest(key=b"/cut/x"))
    try:
        for turns in range(4):  # the close lands before the write began, or while it waits
            client = s.client
            call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)

            async def close(turns: int = turns, channel: Any = client.channel) -> None:
                for _ in range(turns):
                    await asyncio.sleep(0)  # lets the write get that far, not a wait for time
                await channel.close()  # what a reconnect does to the old channel

            closing = asyncio.create_task(close())
            with pytest.raises((StoreUnavailable, AioRpcError)):
                async with asyncio.timeout(5):
                    await send_on_stream(call, request)
            await closing
            await s.reconnect()
        # The store's own watch goes on over such cuts.
        start = await s.put("/w", b"1")
        collector = Collector(s.watch_prefix("/", start))
        try:
            assert [b.revision for b in await collector.wait_for(1)] == [start]
        finally:
            await collector.close()
    finally:
        await s.close()
