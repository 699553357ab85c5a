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


async def test_a_step_change_wakes_only_those_who_follow_steps() -> None:
    signals = ClusterSignals()
    async with signals.listening("a", steps=False) as record_only, signals.listening("a") as steps:
        signals.changed("a", record=False)  # a journal record of a's job
        assert steps.is_set() and not record_only.is_set()
        steps.clear()
        signals.changed("a")  # a's record
        assert steps.is_set() and record_only.is_set()
    assert signals._waiting == {}


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
        record_looks = 0

        async def busy_ended(cluster: Cluster) -> bool:
            nonlocal record_looks
            record_looks += 1
            return await ended(cluster)

        done = await service.wait(busy.id, busy_ended, 30, steps=False)
        assert done.state == "failed"
        assert looks == 1 and not waiting.done()  # read once, when the wait began
        steps = await service.job_steps(busy.id, done.job_id or "")
        # Woken by the record's changes (its job's end), not by each of its steps' two records.
        assert steps and record_looks <= 3
        waiting.cancel()
    finally:
        await service.stop()
