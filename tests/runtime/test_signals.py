"""Waiting on one cluster is woken by that cluster's changes only (a real service on a real etcd)."""

from __future__ import annotations

import asyncio

from dead_cloud import DEAD_CLOUD

from pitrix.runtime.actions import TRANSITIONAL
from pitrix.runtime.records import Cluster
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.service import RuntimeService
from pitrix.runtime.signals import ClusterSignals
from pitrix.sealing import Sealer
from pitrix.store import Store

APP = {"name": "demo", "roles": [{"name": "web", "count": 1, "image": "demo"}]}


async def ended(cluster: Cluster) -> bool:
    return cluster.state not in TRANSITIONAL


async def test_a_change_wakes_only_its_clusters_waiters() -> None:
    signals = ClusterSignals()
    async with signals.listening("a") as a, signals.listening("b") as b:
        signals.changed("b")
        assert b.is_set() and not a.is_set()
        signals.changed("nobody-waits")
    assert signals._waiting == {}  # nothing kept for clusters nobody waits on


async def test_waiting_on_one_cluster_ignores_the_others(store: Store) -> None:
    retry = RetryPolicy(attempts=1, first_delay=0.0, max_delay=0.0)
    sealer = Sealer.generate()
    first = RuntimeService(store, retry=retry, sealer=sealer)
    await first.start()
    try:
        await first.put_runtime(DEAD_CLOUD)
        quiet, _ = await first.create_cluster(owner="o", runtime="dead", app=APP)
        await first.wait(quiet.id, ended, 30)
    finally:
        await first.stop()
    # A fresh service follows etcd from after quiet's last write: quiet's own trailing watch
    # events (which rightly wake its waiters) cannot land inside the window measured below.
    service = RuntimeService(store, retry=retry, sealer=sealer)
    await service.start()
    try:
        looks = 0

        async def never(_cluster: Cluster) -> bool:
            nonlocal looks
            looks += 1
            return False

        waiting = asyncio.create_task(service.wait(quiet.id, never, 60))
        # Another cluster lives a whole (short) life meanwhile: created, its steps journaled, failed.
        busy, _ = await service.create_cluster(owner="o", runtime="dead", app=APP)
        done = await service.wait(busy.id, ended, 30)
        assert done.state == "failed"
        assert looks == 1 and not waiting.done()  # read once, when the wait began
        waiting.cancel()
    finally:
        await service.stop()
