"""One layer retries a given cloud failure: the provider when it can repeat the call as it is, the
step executor otherwise, nobody when it is terminal.

The faults are the simulator's own (``sim.faults.inject``) and the calls are counted where they
land, at the simulator: a failure that both layers retried would show as the product of their
attempts (5 x 4 here), one retried by one layer as that layer's attempts alone.
"""

from __future__ import annotations

import pytest

from pitrix.providers.base import Failure, InstanceSpec
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.runtime.executor import StepFailed, execute
from pitrix.runtime.journal import Journal
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.retrying import RetryPolicy
from pitrix.store import Store
from simulator.cloud import Simulator

STEP_ATTEMPTS = 4
POLICY = RetryPolicy(attempts=STEP_ATTEMPTS, first_delay=0.01, max_delay=0.02)
CALL_ATTEMPTS = 5  # QingCloudClient's default
LOTS = 1000  # a fault that outlasts every attempt


class Refusals:
    """``times`` refusals of ``action`` with ``ret_code``, counting how many calls met one."""

    def __init__(self, sim: Simulator, action: str, ret_code: int, times: int = LOTS) -> None:
        self.sim, self.action, self.times = sim, action, times
        sim.faults.inject(action, ret_code, times=times)

    @property
    def calls(self) -> int:
        queued = [f for f in self.sim.faults.describe()["queued"] if f["action"] == self.action]  # type: ignore[index]
        return self.times - (int(queued[0]["times"]) if queued else 0)


def lookup(provider: QingCloudProvider) -> Step:
    async def run() -> str:
        return str(len(await provider.describe_instances(name_prefix="rl-")))

    return Step("lookup", run)


def create(provider: QingCloudProvider) -> Step:
    """As the runtime's create step: look the name up first, create only what is not there."""

    async def run() -> str:
        if not await provider.describe_instances(name_prefix="rl-n1"):
            await provider.run_instances([InstanceSpec(name="rl-n1", image="pitrix-metadata")])
        return "made"

    return Step("create", run)


async def run_plan(store: Store, step: Step, job: str) -> tuple[Journal, StepFailed | None]:
    journal = Journal(store, "c-rl", job)
    try:
        await execute(Plan("t").then(step), journal, retry=POLICY)
    except StepFailed as exc:
        return journal, exc
    return journal, None


async def test_a_transient_error_of_a_repeatable_call_is_retried_by_the_provider_only(
    store: Store, sim: Simulator, provider: QingCloudProvider
) -> None:
    busy = Refusals(sim, "DescribeInstances", 5000)
    journal, failed = await run_plan(store, lookup(provider), "j1")
    assert failed is not None and "ret_code 5000" in str(failed)
    assert busy.calls == CALL_ATTEMPTS  # not CALL_ATTEMPTS * STEP_ATTEMPTS
    assert (await journal.records())["lookup"].attempt == 1


async def test_throttling_of_a_create_is_retried_by_the_provider_only(
    store: Store, sim: Simulator, provider: QingCloudProvider
) -> None:
    throttled = Refusals(sim, "RunInstances", 1500)
    journal, failed = await run_plan(store, create(provider), "j2")
    assert failed is not None and "ret_code 1500" in str(failed)
    assert throttled.calls == CALL_ATTEMPTS  # throttled: nothing was done, so the call itself is repeated
    assert (await journal.records())["create"].attempt == 1
    assert sim.ledger() == []


async def test_an_ambiguous_failure_of_a_create_is_retried_by_the_step_only(
    store: Store, sim: Simulator, provider: QingCloudProvider
) -> None:
    busy = Refusals(sim, "RunInstances", 5000)
    journal, failed = await run_plan(store, create(provider), "j3")
    assert failed is not None and f"after {STEP_ATTEMPTS} attempts" in str(failed)
    assert busy.calls == STEP_ATTEMPTS  # one RunInstances per run of the step, never repeated blindly
    assert (await journal.records())["create"].attempt == STEP_ATTEMPTS


async def test_a_transient_error_that_passes_ends_with_one_instance(
    store: Store, sim: Simulator, provider: QingCloudProvider
) -> None:
    busy = Refusals(sim, "RunInstances", 5000, times=2)
    journal, failed = await run_plan(store, create(provider), "j4")
    assert failed is None
    assert busy.calls == 2
    assert (await journal.records())["create"].attempt == 3
    assert [entry["name"] for entry in sim.ledger()] == ["rl-n1"]
    await provider.terminate_instances([entry["instance_id"] for entry in sim.ledger()])


@pytest.mark.parametrize(("action", "ret_code"), [("DescribeInstances", 1400), ("RunInstances", 2100)])
async def test_a_terminal_error_is_not_retried_at_all(
    store: Store, sim: Simulator, provider: QingCloudProvider, action: str, ret_code: int
) -> None:
    refused = Refusals(sim, action, ret_code)
    journal, failed = await run_plan(store, create(provider), f"j5-{action}")
    assert failed is not None and f"ret_code {ret_code}" in str(failed)
    assert refused.calls == 1
    assert (await journal.records())["create"].attempt == 1


def test_the_classification_says_who_may_repeat_a_call() -> None:
    assert not Failure.TERMINAL.transient and not Failure.TERMINAL.repeatable(idempotent=True)
    assert Failure.TRANSIENT.repeatable(idempotent=True)
    assert not Failure.TRANSIENT.repeatable(idempotent=False)
    assert Failure.NOTHING_DONE.repeatable(idempotent=False)
