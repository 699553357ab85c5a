"""Plans run layer by layer against a real etcd journal, and resume where they stopped."""

from __future__ import annotations

import asyncio

import pytest

from pitrix.runtime.executor import StepFailed, execute
from pitrix.runtime.journal import Journal
from pitrix.runtime.plan import Plan, Step
from pitrix.store import Store


def recorder(log: list[str], name: str, fail: bool = False) -> Step:
    async def run() -> str:
        log.append(name)
        if fail:
            raise RuntimeError(f"{name} broke")
        return f"{name} ok"

    return Step(name, run)


async def test_layers_run_in_order_and_steps_of_a_layer_together(store: Store) -> None:
    both_started = asyncio.Event()
    started: list[str] = []

    def together(name: str) -> Step:
        async def run() -> None:
            started.append(name)
            if len(started) == 2:
                both_started.set()
            await asyncio.wait_for(both_started.wait(), 5)

        return Step(name, run)

    log: list[str] = []
    plan = (
        Plan("t").then(recorder(log, "first")).then(together("a"), together("b")).then(recorder(log, "last"))
    )
    await execute(plan, Journal(store, "c1", "j1"))
    assert log == ["first", "last"]
    assert sorted(started) == ["a", "b"]
    records = await Journal(store, "c1", "j1").records()
    assert {name: r.status for name, r in records.items()} == dict.fromkeys(
        ["first", "a", "b", "last"], "done"
    )
    assert records["first"].detail == "first ok"


async def test_failed_step_stops_the_plan_and_is_journaled(store: Store) -> None:
    log: list[str] = []
    plan = (
        Plan("t")
        .then(recorder(log, "one"))
        .then(recorder(log, "two", fail=True))
        .then(recorder(log, "three"))
    )
    with pytest.raises(StepFailed, match="step two: two broke"):
        await execute(plan, Journal(store, "c1", "j2"))
    assert log == ["one", "two"]
    records = await Journal(store, "c1", "j2").records()
    assert records["two"].status == "failed"
    assert records["two"].error == "two broke"
    assert "three" not in records


async def test_resume_skips_done_steps_and_reruns_the_rest(store: Store) -> None:
    log: list[str] = []
    failing = Plan("t").then(recorder(log, "one")).then(recorder(log, "two", fail=True))
    with pytest.raises(StepFailed):
        await execute(failing, Journal(store, "c1", "j3"))
    fixed = Plan("t").then(recorder(log, "one")).then(recorder(log, "two")).then(recorder(log, "three"))
    await execute(fixed, Journal(store, "c1", "j3"))
    assert log == ["one", "two", "two", "three"]


async def test_a_step_interrupted_midway_runs_again(store: Store) -> None:
    journal = Journal(store, "c1", "j4")
    await journal.started("one")  # a crash after the start record, before the end record
    log: list[str] = []
    await execute(Plan("t").then(recorder(log, "one")), journal)
    assert log == ["one"]


async def test_step_timeout_fails_the_step(store: Store) -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(StepFailed, match="timed out"):
        await execute(Plan("t").then(Step("slow", forever, timeout=0.05)), Journal(store, "c1", "j5"))


async def test_progress_sees_every_start_and_end(store: Store) -> None:
    seen: list[tuple[str, str]] = []

    async def progress(record) -> None:  # type: ignore[no-untyped-def]
        seen.append((record.name, record.status))

    await execute(Plan("t").then(recorder([], "one")), Journal(store, "c1", "j6"), progress)
    assert seen == [("one", "running"), ("one", "done")]
