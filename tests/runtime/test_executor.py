"""Plans run layer by layer against a real etcd journal, and resume where they stopped."""

from __future__ import annotations

import asyncio

import pytest

from pitrix.cli.progress import step_line
from pitrix.providers.base import Failure, ProviderError
from pitrix.runtime import journal as journal_module
from pitrix.runtime.executor import StepFailed, execute
from pitrix.runtime.journal import Journal
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.records import StepRecord
from pitrix.runtime.retrying import RetryPolicy
from pitrix.store import Store, StoreUnavailable


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


async def test_a_one_step_layers_end_is_journaled_with_the_next_layers_starts(store: Store) -> None:
    log: list[str] = []
    plan = (
        Plan("t")
        .then(recorder(log, "one"))
        .then(recorder(log, "a"), recorder(log, "b"))
        .then(recorder(log, "two"))
        .then(recorder(log, "three"))
    )
    journal = Journal(store, "c1", "j9")
    await execute(plan, journal)
    kvs = {kv.key.rpartition("/")[2]: kv for kv in (await store.get_prefix(journal.prefix))[0]}
    # one's end and the starts of a and b: one write; a's and b's ends: each its own (progress
    # shows each as it finishes); two's end with three's start; three's end alone.
    assert kvs["one"].mod_revision == kvs["a"].create_revision == kvs["b"].create_revision
    assert kvs["a"].mod_revision != kvs["b"].mod_revision
    assert kvs["two"].mod_revision == kvs["three"].create_revision < kvs["three"].mod_revision
    assert kvs["one"].version == kvs["two"].version == 2  # a start and an end, nothing more
    assert {name: r.status for name, r in (await journal.records()).items()} == dict.fromkeys(
        ["one", "a", "b", "two", "three"], "done"
    )
    assert (await journal.records())["two"].detail == "two ok"


async def test_a_layer_of_more_steps_than_one_transaction_holds_is_journaled_in_several(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "WRITE_OPS", 10)  # etcd's 128, made small
    log: list[str] = []
    wide = [recorder(log, f"s{n:02d}") for n in range(25)]
    journal = Journal(store, "c1", "j10")
    await execute(Plan("t").then(recorder(log, "first")).then(*wide), journal)
    records = await journal.records()
    assert len(records) == 26 and {r.status for r in records.values()} == {"done"}
    kvs, _ = await store.get_prefix(journal.prefix)
    # first's end and the 25 starts: 26 records in transactions of 10, 10 and 6.
    assert len({kv.create_revision for kv in kvs if kv.key.rpartition("/")[2] != "first"}) == 3


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


async def test_etcd_unavailable_in_a_step_is_no_failure_and_the_step_runs_again(store: Store) -> None:
    """A step cut off by pitrixd's own etcd (a member killed, a reconnect) fails no job: the
    step stays started, the error goes up (the replica runs the job again), and the re-run
    runs the step again."""
    log: list[str] = []
    cut = asyncio.Event()

    async def cut_once() -> str:
        log.append("write")
        if not cut.is_set():
            cut.set()
            raise StoreUnavailable("transaction: request cut off by a reconnect")
        return "written"

    plan = Plan("t").then(recorder(log, "one")).then(Step("write", cut_once)).then(recorder(log, "three"))
    journal = Journal(store, "c1", "j7")
    with pytest.raises(StoreUnavailable):
        await execute(plan, journal)
    assert (await journal.records())["write"].status == "running"
    await execute(plan, journal)
    assert log == ["one", "write", "write", "three"]
    assert {r.status for r in (await journal.records()).values()} == {"done"}


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


def flaky(calls: list[int], failures: int, error: Exception) -> Step:
    """A step failing with ``error`` its first ``failures`` runs, then succeeding."""

    async def run() -> str:
        calls.append(len(calls) + 1)
        if len(calls) <= failures:
            raise error
        return f"ok after {len(calls)}"

    return Step("flaky", run)


FAST = RetryPolicy(attempts=4, first_delay=0.01, max_delay=0.02)
BUSY = ProviderError("qingcloud RunInstances: ret_code 5000: busy", code="5000", failure=Failure.TRANSIENT)


async def test_a_retryable_cloud_error_runs_the_step_again_and_journals_the_attempts(store: Store) -> None:
    calls: list[int] = []
    seen: list[tuple[str, int, str | None]] = []

    async def progress(record: StepRecord) -> None:
        seen.append((record.status, record.attempt, record.last_error))

    journal = Journal(store, "c1", "r1")
    await execute(Plan("t").then(flaky(calls, 2, BUSY)), journal, progress, FAST)
    assert calls == [1, 2, 3]
    record = (await journal.records())["flaky"]
    assert (record.status, record.attempt, record.attempts, record.detail) == ("done", 3, 4, "ok after 3")
    assert seen == [
        ("running", 1, None),
        ("running", 2, str(BUSY)),
        ("running", 3, str(BUSY)),
        ("done", 3, str(BUSY)),
    ]
    assert "retrying (2/4): qingcloud RunInstances: ret_code 5000" in step_line(
        {
            "name": "flaky",
            "status": "running",
            "started": 0.0,
            "attempt": 2,
            "attempts": 4,
            "last_error": str(BUSY),
        }
    )


async def test_a_wrapped_retryable_error_is_retried_too(store: Store) -> None:
    calls: list[int] = []

    async def run() -> None:
        calls.append(1)
        if len(calls) == 1:
            try:
                raise BUSY
            except ProviderError as exc:
                raise RuntimeError("node web-1: could not create") from exc

    await execute(Plan("t").then(Step("wrapped", run)), Journal(store, "c1", "r2"), retry=FAST)
    assert len(calls) == 2


async def test_retries_are_bounded(store: Store) -> None:
    calls: list[int] = []
    journal = Journal(store, "c1", "r3")
    with pytest.raises(StepFailed, match=r"ret_code 5000: busy \(after 4 attempts\)"):
        await execute(Plan("t").then(flaky(calls, 100, BUSY)), journal, retry=FAST)
    assert calls == [1, 2, 3, 4]
    record = (await journal.records())["flaky"]
    assert (record.status, record.attempt) == ("failed", 4)


async def test_a_non_retryable_error_fails_at_once(store: Store) -> None:
    calls: list[int] = []
    refused = ProviderError("qingcloud RunInstances: ret_code 1400: bad image", code="1400")
    journal = Journal(store, "c1", "r4")
    with pytest.raises(StepFailed, match=r"ret_code 1400: bad image$"):
        await execute(Plan("t").then(flaky(calls, 1, refused)), journal, retry=FAST)
    assert calls == [1]
    assert (await journal.records())["flaky"].attempt == 1


async def test_the_step_timeout_bounds_all_attempts(store: Store) -> None:
    calls: list[int] = []
    patient = RetryPolicy(attempts=100, first_delay=0.02, max_delay=0.02)
    step = flaky(calls, 1000, BUSY)
    with pytest.raises(StepFailed, match="timed out"):
        await execute(
            Plan("t").then(Step("flaky", step.run, timeout=0.3)), Journal(store, "c1", "r5"), retry=patient
        )
    assert 1 < len(calls) < 100


def test_a_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="max_delay"):
        RetryPolicy(first_delay=2, max_delay=1)
