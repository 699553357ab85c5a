"""Writes fenced by the ownership claim, over a real etcd: a replica that lost a cluster (its lease
ran out, another replica claimed it) has every journal write refused, and its plan ends at once
without recording the job as failed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from dead_cloud import DEAD_CLOUD

from pitrix.providers.base import Failure, ProviderError
from pitrix.runtime.executor import execute
from pitrix.runtime.journal import Journal
from pitrix.runtime.keys import job_key, owner_key, step_key
from pitrix.runtime.ownership import LostOwnership, Ownership
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.service import RuntimeService
from pitrix.sealing import Sealer
from pitrix.store import Store

APP = {"name": "demo", "roles": [{"name": "web", "count": 1, "image": "demo"}]}


async def nothing(_: str) -> None:
    return None


async def expire(store: Store, ownership: Ownership) -> None:
    """What a lease running out does in etcd, while the replica still believes it holds it (frozen)."""
    await store.revoke_lease(ownership.lease_id)


async def test_a_fence_holds_only_while_the_claim_it_was_taken_under_does(store: Store) -> None:
    first = Ownership(store, "a", 30, nothing)
    second = Ownership(store, "b", 30, nothing)
    again = Ownership(store, "a", 30, nothing)  # replica a, its lease renewed after the loss
    later = Ownership(store, "a", 30, nothing)  # replica a in a later life: same id, new lease
    for ownership in (first, second, again, later):
        await ownership.start()
    try:
        with pytest.raises(LostOwnership, match="cl-1"):
            first.fence("cl-1")  # no claim, no fence
        assert await first.claim("cl-1")
        journal = Journal(store, "cl-1", "j1", fence=first.fence("cl-1"))
        record = await journal.started("run-instances")
        assert await first.claim("cl-1")  # claimed again on every event: the fence stays valid
        record = await journal.retrying(record, 2, 5, "busy")

        await expire(store, first)
        with pytest.raises(LostOwnership, match="journal write of step run-instances refused"):
            await journal.finished(record)  # the key is gone: nobody owns the cluster
        assert await second.claim("cl-1")
        with pytest.raises(LostOwnership):
            await journal.failed(record, "no")
        theirs = Journal(store, "cl-1", "j1", fence=second.fence("cl-1"))
        await theirs.finished(await theirs.started("run-instances"), "b did it")
        with pytest.raises(LostOwnership):
            await journal.started("run-instances")
        records = await journal.records()
        assert (records["run-instances"].status, records["run-instances"].detail) == ("done", "b did it")

        await second.release("cl-1")
        with pytest.raises(LostOwnership):
            second.fence("cl-1")  # released: no claim to fence with
        assert await again.claim("cl-1")
        with pytest.raises(LostOwnership):
            await journal.started("run-instances")  # a's own new claim does not revive old fences
        stale = again.fence("cl-1")
        assert await later.claim("cl-1")  # a's later life takes its key back
        with pytest.raises(LostOwnership):
            await Journal(store, "cl-1", "j2", fence=stale).started("x")
        await Journal(store, "cl-1", "j2", fence=later.fence("cl-1")).started("x")
    finally:
        for ownership in (first, second, again, later):
            await ownership.close()


async def test_a_lost_claim_ends_the_plan_at_once_and_journals_no_failure(store: Store) -> None:
    mine = Ownership(store, "a", 30, nothing)
    theirs = Ownership(store, "b", 30, nothing)
    await mine.start()
    await theirs.start()
    try:
        assert await mine.claim("cl-2")
        waiting = asyncio.Event()
        sibling_cancelled = asyncio.Event()
        ran: list[str] = []

        async def slow_sibling() -> str:
            try:
                waiting.set()
                await asyncio.Event().wait()  # only cancelling ends it
            except asyncio.CancelledError:
                sibling_cancelled.set()
                raise
            return "never"

        async def taken_over() -> str:
            await waiting.wait()
            await expire(store, mine)
            assert await theirs.claim("cl-2")
            return "done here, but written nowhere"

        async def later() -> str:
            ran.append("later")
            return "never"

        plan = Plan("create").then(Step("wait-agents", slow_sibling), Step("run-instances", taken_over))
        plan = plan.then(Step("start-services", later))
        journal = Journal(store, "cl-2", "j1", fence=mine.fence("cl-2"))
        with pytest.raises(LostOwnership):
            await asyncio.wait_for(execute(plan, journal), 10)
        assert sibling_cancelled.is_set() and ran == []
        records = await journal.records()
        assert {name: r.status for name, r in records.items()} == {
            "wait-agents": "running",
            "run-instances": "running",
        }
    finally:
        await mine.close()
        await theirs.close()


async def test_a_step_that_reports_a_lost_claim_is_neither_retried_nor_failed(store: Store) -> None:
    mine = Ownership(store, "a", 30, nothing)
    await mine.start()
    try:
        assert await mine.claim("cl-3")
        runs: list[int] = []

        async def refused() -> str:
            runs.append(1)
            raise LostOwnership("cl-3", "node record write refused") from ProviderError(
                "busy", code="ServiceBusy", failure=Failure.TRANSIENT
            )

        journal = Journal(store, "cl-3", "j1", fence=mine.fence("cl-3"))
        retry = RetryPolicy(attempts=5, first_delay=0.0, max_delay=0.0)
        with pytest.raises(LostOwnership, match="node record"):
            await execute(Plan("scale_out").then(Step("save-nodes", refused)), journal, retry=retry)
        assert runs == [1]
        record = (await journal.records())["save-nodes"]
        assert (record.status, record.error) == ("running", None)
        kv = await store.get(owner_key("cl-3"))
        assert kv is not None and kv.text == "a"
    finally:
        await mine.close()


async def test_a_replica_whose_lease_ran_out_unnoticed_writes_nothing_more(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two services; a's lease is revoked in etcd (what its running out does to a frozen replica)
    while a keeps retrying a step and has not yet noticed: b adopts the job and ends it; a's next
    journal write is refused, its job stops quietly, and every record after that is b's."""
    sealer = Sealer.generate()
    patient = RetryPolicy(attempts=100, first_delay=0.05, max_delay=0.05)
    a = RuntimeService(
        store, RecoveryPolicy(enabled=False), sealer=sealer, replica="a", owner_ttl=60, retry=patient
    )
    b = RuntimeService(
        store, RecoveryPolicy(enabled=False), sealer=sealer, replica="b", owner_ttl=60, retry=RetryPolicy(1)
    )
    await a.start()
    await b.start()
    try:
        await a.put_runtime(DEAD_CLOUD)

        async def busy(*_: Any) -> Any:  # a transient cloud error nobody retried yet: the step retries
            raise ProviderError("busy", code="ServiceBusy", failure=Failure.TRANSIENT)

        monkeypatch.setattr(a.metadata, "ensure", busy)
        _, before = await store.get_prefix("/clusters/")
        cluster, job = await a.create_cluster(owner="o", runtime="dead", app=APP)
        key = step_key(cluster.id, job.id, "metadata")
        _, value = await wait_for(store, key, before + 1, lambda v: v.get("attempt", 1) >= 2)
        mine = value["started"]  # a's run of the step, as its retries rewrite it
        running = a.supervisor.tasks.get(cluster.id)
        assert running is not None

        await expire(store, a.ownership)  # a does not renew for another ~20 s: it has not noticed
        _, revoked_at = await store.get_prefix(key)
        try:  # ended by its next, refused journal write: not cancelled, not failed
            await asyncio.wait_for(asyncio.shield(running), 20)
        except TimeoutError:
            raise AssertionError("a kept running the job after b adopted it") from None
        assert not running.cancelled() and not a.ownership.lost.is_set()
        ended = await b.wait(cluster.id, lambda c: _ended(c.state), 30)
        assert ended.state == "failed" and "metadata" in (ended.last_error or "")
        assert (await store.get(owner_key(cluster.id))).text == "b"  # type: ignore[union-attr]

        writes = await puts_since(store, f"/cluster-data/{cluster.id}/", revoked_at + 1)
        step_writes = [v for k, v in writes if k == key]
        assert step_writes and all(v["started"] != mine for v in step_writes), "a wrote after losing"
        job_writes = [v for k, v in writes if k == job_key(cluster.id, job.id)]
        assert [v["status"] for v in job_writes] == ["failed"]  # the job's end, once, by b
    finally:
        await a.stop()
        await b.stop()


async def _ended(state: str) -> bool:
    return state in ("failed", "active")


async def wait_for(
    store: Store, key: str, from_revision: int, match: Any, timeout: float = 20.0
) -> tuple[int, dict[str, Any]]:
    """The first put of ``key`` since ``from_revision`` whose JSON value ``match``es."""

    async def watching() -> tuple[int, dict[str, Any]]:
        async for batch in store.watch_prefix(key, from_revision):
            for event in batch.events:
                if event.type == "put" and event.key == key and match(json.loads(event.value)):
                    return event.revision, json.loads(event.value)
        raise AssertionError("watch ended")

    return await asyncio.wait_for(watching(), timeout)


async def puts_since(store: Store, prefix: str, revision: int) -> list[tuple[str, dict[str, Any]]]:
    """Every put under ``prefix`` from ``revision`` up to now, in order (the watch replays them)."""
    _, now = await store.get_prefix(prefix)
    found: list[tuple[str, dict[str, Any]]] = []
    if now < revision:
        return found
    async with asyncio.timeout(10):
        async for batch in store.watch_prefix(prefix, revision):
            found += [(e.key, json.loads(e.value)) for e in batch.events if e.type == "put"]
            if batch.revision >= now:
                return found
    raise AssertionError("watch ended")
