"""Replicas share the clusters (pitrix.runtime.fleet): three real services on a real etcd.

Every cluster is accepted by one replica; the fleet deals it to the least loaded one, a replica
that leaves has its clusters spread over the others, and one that comes back gets its share back
from the others' idle clusters, never from a cluster whose job is running. The clusters live on a
cloud that refuses every call, so their jobs end at once (failed, idle) unless the test holds them.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from dead_cloud import DEAD_CLOUD

from pitrix.runtime.actions import TRANSITIONAL
from pitrix.runtime.fleet import deal, fair_share, score
from pitrix.runtime.records import Cluster
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.service import RuntimeService
from pitrix.sealing import Sealer
from pitrix.store import Store
from tests.fleet_keys import owner_keys, tally, until

APP = {"name": "demo", "roles": [{"name": "web", "count": 1, "image": "demo"}]}
CLUSTERS = 30
DEADLINE = 60.0


def test_orphans_are_dealt_to_the_least_loaded_and_ties_by_rendezvous() -> None:
    orphans = [f"cl-{i:04x}" for i in range(CLUSTERS)]
    even = collections.Counter(deal(orphans, {"a": 0, "b": 0, "c": 0}).values())
    assert sorted(even.values()) == [10, 10, 10]
    # A replica that joins empty takes the orphans until it has caught up with the others.
    assert set(deal(orphans[:5], {"a": 10, "b": 10, "new": 0}).values()) == {"new"}
    # With one orphan and equal loads, the replica that scores it highest wins, whoever asks.
    best = max("abc", key=lambda r: score(r, "cl-x"))
    assert deal(["cl-x"], {"c": 3, "a": 3, "b": 3}) == {"cl-x": best}
    assert deal(["cl-x"], {}) == {}
    assert fair_share(30, 3) == 10 and fair_share(31, 3) == 11 and fair_share(5, 0) == 5


class HeldCloud:
    """A cloud whose every answer (a refusal) waits until the test lets it go."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def answer(self, _request: web.Request) -> web.Response:
        self.called.set()
        await self.release.wait()
        return web.json_response({"ret_code": 1400, "message": "refused by the test's cloud"})


@pytest.fixture
async def held_cloud() -> AsyncIterator[tuple[str, HeldCloud]]:
    cloud = HeldCloud()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", cloud.answer)
    async with TestServer(app, host="127.0.0.1") as server:
        try:
            yield str(server.make_url("")).rstrip("/"), cloud
        finally:
            cloud.release.set()


async def until_owners(store: Store, holds: Callable[[dict[str, str]], bool], what: str) -> dict[str, str]:
    return await until(store, owner_keys, holds, what, DEADLINE)


async def seen_by(
    service: RuntimeService, holds: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The replica's view of the fleet once ``holds`` it, checked on every change of the view."""
    async with asyncio.timeout(DEADLINE):
        while not holds(view := service.replica_view()):
            service.fleet.changed.clear()
            await service.fleet.changed.wait()
    return view


async def moves_reach(services: list[RuntimeService], total: int) -> None:
    async with asyncio.timeout(DEADLINE):
        while sum(s.claim_moves for s in services) < total:
            for service in services:
                service.fleet.changed.clear()
            await asyncio.wait(
                [asyncio.ensure_future(s.fleet.changed.wait()) for s in services],
                return_when=asyncio.FIRST_COMPLETED,
            )
    assert sum(s.claim_moves for s in services) == total


def shares(expected: dict[str, int]) -> Callable[[dict[str, str]], bool]:
    return lambda now: dict(tally(now)) == expected


async def ended(cluster: Cluster) -> bool:
    return cluster.state not in TRANSITIONAL


async def replica(store: Store, sealer: Sealer, name: str) -> RuntimeService:
    service = RuntimeService(
        store, replica=name, owner_ttl=2, sealer=sealer, retry=RetryPolicy(attempts=1, first_delay=0.0)
    )
    await service.start()
    return service


async def test_replicas_share_clusters_and_move_them_only_between_jobs(
    store: Store, sealer: Sealer, held_cloud: tuple[str, HeldCloud]
) -> None:
    url, cloud = held_cloud
    services = {name: await replica(store, sealer, name) for name in "abc"}
    try:
        a = services["a"]
        await a.put_runtime(DEAD_CLOUD)
        await a.put_runtime({**DEAD_CLOUD, "name": "held", "endpoint": url})
        # Every request lands on one replica; the clusters go to all three.
        created = [
            (await a.create_cluster(owner=f"o{i}", runtime="dead", app=APP, name=f"c{i}"))[0]
            for i in range(CLUSTERS - 1)
        ]
        ends = await asyncio.gather(*(a.wait(cluster.id, ended, DEADLINE) for cluster in created))
        assert {cluster.state for cluster in ends} == {"failed"}
        busy, _ = await a.create_cluster(owner="p", runtime="held", app=APP, name="busy")
        await asyncio.wait_for(cloud.called.wait(), DEADLINE)
        now = await until_owners(store, lambda o: sorted(tally(o).values()) == [10] * 3, "even")
        view = await seen_by(services["b"], lambda v: sorted(r["clusters_owned"] for r in v) == [10, 10, 10])
        assert sum(r["jobs_running"] for r in view) == 1 and [r["self"] for r in view] == [False, True, False]

        # A replica leaves (its lease revoked): the other two take its clusters, half each.
        leaver = next(name for name in "abc" if name != now[busy.id])
        moved = sum(s.claim_moves for s in services.values())
        await services.pop(leaver).stop()
        rest = sorted(services)
        await until_owners(store, shares(dict.fromkeys(rest, 15)), f"{leaver}'s clusters adopted")
        # Each survivor counts its adoptions as claim moves (told once its claim has returned).
        await moves_reach(list(services.values()), moved + 10)

        # It comes back: the others hand over idle clusters until the shares are even again;
        # the cluster whose job runs is not theirs to hand over until that job has ended.
        holder = await store.get(f"/owners/{busy.id}")
        assert holder is not None
        assert not await services[holder.text]._hand_over(busy.id)
        services[leaver] = await replica(store, sealer, leaver)
        await until_owners(store, shares(dict.fromkeys("abc", 10)), "shares evened out")
        kept = await store.get(f"/owners/{busy.id}")
        assert kept is not None and (kept.text, kept.mod_revision) == (holder.text, holder.mod_revision)
        cloud.release.set()
        assert (await services[leaver].wait(busy.id, ended, DEADLINE)).state == "failed"
        job = await a.get_job(busy.id, busy.job_id or "")
        assert job.status == "failed" and "refused by the test's cloud" in (job.error or "")
    finally:
        for service in services.values():
            await service.stop()
