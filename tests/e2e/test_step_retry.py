"""A cloud that answers "busy" now and then does not fail a job; a real refusal fails it at once.

The simulator refuses the next RunInstances calls on purpose (`POST /_sim/faults`); RunInstances is
not idempotent, so the QingCloud client does not repeat it and the refusal reaches the step. The
step looks its instances up by name before it creates them, so the executor may run it again.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from e2e_cloud import Cloud
from e2e_daemons import APP
from test_lifecycle import expect

from pitrix.runtime.records import StepRecord

pytestmark = pytest.mark.e2e


def small_app() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(APP.read_text())
    return spec


async def refuse(cloud: Cloud, ret_code: int, times: int) -> None:
    fault = {"action": "RunInstances", "ret_code": ret_code, "times": times}
    async with cloud.http.post(cloud.sim_url + "/_sim/faults", json=fault) as response:
        assert response.status == 201, await response.text()


async def steps_of(cloud: Cloud, cid: str) -> list[StepRecord]:
    cluster = await cloud.service.get_cluster(cid)
    return await cloud.service.job_steps(cid, cluster.job_id or "")


async def test_a_create_survives_busy_answers_to_run_instances(cloud: Cloud) -> None:
    service = cloud.service
    await refuse(cloud, 5000, 3)
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=small_app(), counts={"web": 2, "lb": 1}
    )
    await expect(service, cluster.id, "active")
    # The metadata VM's RunInstances comes first: its refusals are retried in the metadata plan.
    steps = await steps_of(cloud, cluster.id) + list((await service.metadata.steps("o", "sim")).values())
    retried = [s for s in steps if s.attempt > 1]
    # Every refusal cost one attempt of the step that asked, and each was journaled with its cause.
    assert sum(s.attempt - 1 for s in steps) == 3, [(s.name, s.attempt) for s in steps]
    assert all(s.status == "done" and "ret_code 5000" in (s.last_error or "") for s in retried)
    assert len(await cloud.live_names()) == 4  # the metadata VM and three nodes, none twice
    await service.delete_cluster(cluster.id)
    await expect(service, cluster.id, "deleted")


async def test_a_refusal_that_is_not_retryable_fails_the_job_at_once(cloud: Cloud) -> None:
    service = cloud.service
    await refuse(cloud, 1400, 1)
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=small_app(), counts={"web": 1, "lb": 1}
    )
    failed = await expect(service, cluster.id, "failed")
    assert "ret_code 1400" in (failed.last_error or "")
    steps = await steps_of(cloud, cluster.id)
    broken = [s for s in steps if s.status == "failed"]
    assert len(broken) == 1 and broken[0].attempt == 1 and "ret_code 1400" in (broken[0].error or "")
    # The refusal was a one-off: retrying the job finishes it, the journal skipping what was done.
    await service.retry(cluster.id)
    await expect(service, cluster.id, "active")
    await service.delete_cluster(cluster.id)
    await expect(service, cluster.id, "deleted")
