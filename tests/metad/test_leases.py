"""Heartbeat leases against an etcd that stops answering: a beat gives up within the store's
timeout (metad answers 503 before the agent's own request timeout), and beats resume after."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from pitrix.metad.leases import HeartbeatLeases
from pitrix.store import Store, StoreUnavailable
from pitrix.store.embedded import EmbeddedEtcd


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
