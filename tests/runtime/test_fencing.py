"""Writes fenced by the ownership claim, over a real etcd: a replica that lost a cluster (its lease
ran out, another replica claimed it) has every journal write refused, and its plan ends at once
without recording the job as failed."""

from __future__ import annotations

import asyncio

import pytest

from pitrix.providers.base import ProviderError
from pitrix.runtime.executor import execute
from pitrix.runtime.journal import Journal
from pitrix.runtime.ownership import LostOwnership, Ownership, owner_key
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.retrying import RetryPolicy
from pitrix.store import Store


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
                "busy", code="ServiceBusy", retryable=True
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
