"""Heartbeat leases: against an etcd that stops answering a beat gives up within the store's
timeout (metad answers 503 before the agent's own request timeout), and beats resume after; first
beats past the bound are refused (503 + Retry-After) and renewals never; batched first beats keep
a lease per instance, so a dead agent's key still vanishes."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from pitrix.metad.leases import Busy, HeartbeatLeases
from pitrix.store import Store, StoreError, StoreUnavailable
from pitrix.store.embedded import EmbeddedEtcd
from pitrix.store.grouped import GroupedPuts


async def test_a_beat_on_a_frozen_etcd_gives_up_within_the_store_timeout(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    url = await etcd.start()
    store = await Store.connect([url], prefix="/beats", timeout=1.0, tls=etcd.client_tls)
    leases = HeartbeatLeases(store)
    try:
        assert await leases.beat("i-1", "/hb/i-1", "one", 1.0) is not None
        assert etcd.pid is not None
        os.kill(etcd.pid, signal.SIGSTOP)  # connections stay up, nothing is answered
        try:
            # The renewal, a new grant and the put would each wait out the store's timeout
            # (about three of them); the beat as a whole must give up after one.
            with pytest.raises(StoreUnavailable, match="did not answer within 1s"):
                await asyncio.wait_for(leases.beat("i-1", "/hb/i-1", "two", 1.0), 1.9)
        finally:
            os.kill(etcd.pid, signal.SIGCONT)
        assert await leases.beat("i-1", "/hb/i-1", "three", 1.0) is not None
        kv = await store.get("/hb/i-1")
        assert kv is not None and kv.value == b"three" and kv.lease != 0
    finally:
        await leases.close()
        await store.close()
        await etcd.stop()


async def _frozen(etcd: EmbeddedEtcd) -> None:
    assert etcd.pid is not None
    os.kill(etcd.pid, signal.SIGSTOP)


def _thawed(etcd: EmbeddedEtcd) -> None:
    assert etcd.pid is not None
    os.kill(etcd.pid, signal.SIGCONT)


async def test_first_beats_past_the_bound_are_refused_busy_and_renewals_never(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    url = await etcd.start()
    store = await Store.connect([url], prefix="/busy", timeout=5.0, tls=etcd.client_tls)
    now = [100.0]
    leases = HeartbeatLeases(store, max_granting=2, clock=lambda: now[0])
    pending: list[asyncio.Task[int | None]] = []
    try:
        assert await leases.beat("i-0", "/hb/i-0", "zero", 1.0) is not None  # i-0 holds its lease
        await _frozen(etcd)  # what is admitted now stays under way until etcd answers
        try:
            pending += [asyncio.create_task(leases.beat(f"i-{n}", f"/hb/i-{n}", "one", 1.0)) for n in (1, 2)]
            await asyncio.sleep(0)  # both tasks run to their first await: admitted
            assert leases.granting == 2
            # A third first beat is refused at once, without a store call, asked back in 1 s ...
            with pytest.raises(Busy) as refused:
                await leases.beat("i-3", "/hb/i-3", "one", 1.0)
            assert refused.value.retry_after == 1
            # ... and the more are refused within the same second, the later each is asked back.
            asked = []
            for n in range(4, 4 + 2 * leases.max_granting):
                with pytest.raises(Busy) as refused:
                    await leases.beat(f"i-{n}", f"/hb/i-{n}", "one", 1.0)
                asked.append(refused.value.retry_after)
            assert asked == [1, 2, 2, 3]
            now[0] += 1.0  # a new second: back to 1
            with pytest.raises(Busy) as refused:
                await leases.beat("i-9", "/hb/i-9", "one", 1.0)
            assert refused.value.retry_after == 1
            assert leases.refused == 6
            # A renewal is never refused: it waits for etcd like any beat.
            pending.append(asyncio.create_task(leases.beat("i-0", "/hb/i-0", "renewed", 1.0)))
            await asyncio.sleep(0)
            assert not pending[-1].done()
        finally:
            _thawed(etcd)
        assert all(revision is not None for revision in await asyncio.gather(*pending))
        assert leases.granting == 0
        for n, value in ((0, b"renewed"), (1, b"one"), (2, b"one")):
            kv = await store.get(f"/hb/i-{n}")
            assert kv is not None and kv.value == value and kv.lease != 0
        assert await store.get("/hb/i-3") is None  # a refused beat wrote nothing
    finally:
        for task in pending:
            task.cancel()
        await leases.close()
        await store.close()
        await etcd.stop()


async def test_batched_first_beats_keep_a_dead_agents_key_vanishing(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    url = await etcd.start()
    store = await Store.connect([url], prefix="/batch", timeout=5.0, tls=etcd.client_tls)
    leases = HeartbeatLeases(store)
    ids = [f"i-{n}" for n in range(24)]
    try:
        # Together, the first beats' puts share transactions; each key keeps a lease of its own.
        revisions = await asyncio.gather(*(leases.beat(i, f"/hb/{i}", "first", 1.0) for i in ids))
        assert all(r is not None for r in revisions)
        assert leases.puts.transactions < len(ids)
        kvs = [await store.get(f"/hb/{i}") for i in ids]
        assert all(kv is not None for kv in kvs)
        assert len({kv.lease for kv in kvs if kv is not None}) == len(ids)
        # i-0 stops beating; the others beat on at their interval. i-0's key vanishes with its
        # lease (three intervals), the others' stay.
        dead = "/hb/i-0"
        before = kvs[0]
        assert before is not None
        watch = store.watch_prefix(dead, before.mod_revision + 1)
        gone = asyncio.Event()

        async def follow() -> None:
            async for batch in watch:
                if any(event.type == "delete" and event.key == dead for event in batch.events):
                    gone.set()
                    return

        follower = asyncio.create_task(follow())
        waiter = asyncio.ensure_future(gone.wait())
        try:
            beats = 0
            async with asyncio.timeout(15):
                while not gone.is_set():
                    # No news: a renewal each, as an agent's steady beats are.
                    renewals = (
                        leases.beat(i, f"/hb/{i}", "first", 1.0, news=False, stored="first") for i in ids[1:]
                    )
                    assert await asyncio.gather(*renewals) == [None] * (len(ids) - 1)
                    beats += 1
                    await asyncio.wait([waiter], timeout=1.0)  # the interval, or i-0 is gone
        finally:
            follower.cancel()
            waiter.cancel()
            await watch.aclose()  # type: ignore[attr-defined]
        assert beats >= 2  # the others beat past i-0's last (its lease: 3 s)
        assert await store.get(dead) is None
        for i in ids[1:]:
            kv = await store.get(f"/hb/{i}")
            assert kv is not None and kv.value == b"first", i
    finally:
        await leases.close()
        await store.close()
        await etcd.stop()


async def test_a_lost_lease_in_a_batch_fails_only_its_own_put(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    url = await etcd.start()
    store = await Store.connect([url], prefix="/lost", timeout=5.0, tls=etcd.client_tls)
    puts = GroupedPuts(store)
    try:
        kept, _ = await store.grant_lease(30)
        lost, _ = await store.grant_lease(30)
        assert await store.revoke_lease(lost)
        # The first put leaves alone; the two after it wait for it and go together.
        results = await asyncio.gather(
            puts.put("/k/alone", "a"),
            puts.put("/k/kept", "b", lease=kept),
            puts.put("/k/lost", "c", lease=lost),
            return_exceptions=True,
        )
        assert isinstance(results[0], int) and isinstance(results[1], int)
        assert isinstance(results[2], StoreError) and not isinstance(results[2], StoreUnavailable)
        kv = await store.get("/k/kept")
        assert kv is not None and kv.value == b"b" and kv.lease == kept
        assert await store.get("/k/lost") is None
    finally:
        await store.close()
        await etcd.stop()
