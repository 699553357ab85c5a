"""A replica runs at most ``max_jobs`` cluster jobs at once; the others wait their turn and then
run as accepted (a real service on a real etcd, its cloud a local endpoint that refuses every call)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from dead_cloud import DEAD_CLOUD

from pitrix.runtime.actions import TRANSITIONAL
from pitrix.runtime.records import Cluster, StepRecord
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.service import WAIT_SLOT_STEP, RuntimeService
from pitrix.sealing import Sealer
from pitrix.store import Store

APP = {"name": "demo", "roles": [{"name": "web", "count": 1, "image": "demo"}]}


async def ended(cluster: Cluster) -> bool:
    return cluster.state not in TRANSITIONAL


class RefusingCloud:
    """A QingCloud endpoint answering every call with a refusal no client retries. It notes when
    each call came and how many were in flight at most; with ``meet`` set, a call waits (30 s at
    most) until that many are in flight, so jobs that may run at once are seen doing so."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.meet = 1
        self.in_flight = 0
        self.most_in_flight = 0
        self._met = asyncio.Event()

    async def answer(self, _request: web.Request) -> web.Response:
        self.arrivals.append(time.time())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self.meet:
            self._met.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._met.wait(), 30)
        finally:
            self.in_flight -= 1
        return web.json_response({"ret_code": 1400, "message": "refused by the test's cloud"})


@pytest.fixture
async def refusing_cloud() -> AsyncIterator[tuple[str, RefusingCloud]]:
    cloud = RefusingCloud()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", cloud.answer)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/"), cloud


@dataclass
class TwoJobs:
    first_end: float
    second_start: float  # its first plan step's start
    second_end: float
    waits: list[StepRecord | None]  # each job's wait-slot step, if it had to wait


async def run_two(store: Store, url: str, max_jobs: int) -> TwoJobs:
    """Two clusters of different owners (so they share no metadata cluster and nothing else
    orders them) created back to back."""
    service = RuntimeService(
        store,
        retry=RetryPolicy(attempts=1, first_delay=0.0, max_delay=0.0),
        max_jobs=max_jobs,
        sealer=Sealer.generate(),
    )
    await service.start()
    try:
        await service.put_runtime({**DEAD_CLOUD, "name": "refusing", "endpoint": url})
        first, _ = await service.create_cluster(owner="owner-a", runtime="refusing", app=APP)
        second, _ = await service.create_cluster(owner="owner-b", runtime="refusing", app=APP)
        ends, starts, waits = [], [], []
        for cluster in (first, second):
            done = await service.wait(cluster.id, ended, 60)
            assert done.state == "failed" and done.job_id is not None
            job = await service.get_job(cluster.id, done.job_id)
            assert job.finished is not None
            ends.append(job.finished)
            steps = await service.job_steps(cluster.id, job.id)
            starts.append(min(s.started for s in steps if s.name != WAIT_SLOT_STEP))
            waits.append(next((s for s in steps if s.name == WAIT_SLOT_STEP), None))
        return TwoJobs(ends[0], starts[1], ends[1], waits)
    finally:
        await service.stop()


async def test_a_job_beyond_the_slots_starts_when_one_ends(
    store: Store, refusing_cloud: tuple[str, RefusingCloud]
) -> None:
    url, cloud = refusing_cloud
    two = await run_two(store, url, max_jobs=1)
    first_end, second_end = two.first_end, two.second_end
    assert two.second_start >= first_end  # it waited for the slot
    # ... and said so while it did: a step of its own, ended as its turn came.
    first_wait, second_wait = two.waits
    assert first_wait is None
    assert second_wait is not None and second_wait.status == "done" and second_wait.finished is not None
    assert second_wait.finished <= two.second_start
    assert second_wait.detail.startswith("waited ") and "(1 per replica)" in second_wait.detail
    # Both jobs called the cloud, each only while it held the slot: half the calls came before
    # the first job ended (each job makes the same calls), never two at once.
    arrivals = cloud.arrivals
    assert arrivals and len(arrivals) % 2 == 0
    assert sum(1 for t in arrivals if t <= first_end) == len(arrivals) // 2
    assert all(t <= second_end for t in arrivals)
    assert cloud.most_in_flight == 1


async def test_jobs_within_the_slots_run_at_once(
    store: Store, refusing_cloud: tuple[str, RefusingCloud]
) -> None:
    url, cloud = refusing_cloud
    cloud.meet = 2  # each call is answered once the other job's call is in flight too
    two = await run_two(store, url, max_jobs=2)
    assert cloud.most_in_flight == 2
    assert two.second_start < two.first_end
    assert two.waits == [None, None]  # neither waited: no wait-slot step


def test_a_service_needs_a_slot(store: Store) -> None:
    with pytest.raises(ValueError, match="max_jobs"):
        RuntimeService(store, max_jobs=0, sealer=Sealer.generate())
