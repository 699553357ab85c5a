"""The simulator's /_sim/ endpoints: the ledger the demo checks for leaks, faults from outside."""

from __future__ import annotations

import pytest

from pitrix.providers.base import InstanceSpec, ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from simulator.cloud import Simulator
from simulator.testing import admin as request


async def test_ledger_over_http_lists_terminated_vms(sim: Simulator, provider: QingCloudProvider) -> None:
    assert await request(sim, "GET", "/_sim/healthz") == (200, {"ok": True})
    created = await provider.run_instances(
        [InstanceSpec(name=f"led-{n}", image="pitrix-metadata") for n in range(2)]
    )
    await provider.wait_running([i.instance_id for i in created], timeout=10)
    await provider.terminate_instances([created[0].instance_id])
    status, body = await request(sim, "GET", "/_sim/ledger")
    assert status == 200 and body["total_count"] == 2
    by_id = {e["instance_id"]: e for e in body["instances"]}
    assert by_id[created[0].instance_id]["status"] == "terminated"
    assert by_id[created[0].instance_id]["terminated"]
    assert by_id[created[1].instance_id]["status"] == "running"
    assert by_id[created[1].instance_id]["terminated"] is None
    assert set(by_id[created[1].instance_id]) == {
        "instance_id",
        "name",
        "ip",
        "image",
        "status",
        "light",
        "created",
        "terminated",
    }


async def test_faults_injected_over_http(sim: Simulator, provider: QingCloudProvider) -> None:
    status, _ = await request(
        sim, "POST", "/_sim/faults", {"action": "DescribeInstances", "ret_code": 2400, "times": 1}
    )
    assert status == 201
    with pytest.raises(ProviderError) as caught:
        await provider.describe_instances()
    assert caught.value.code == "2400" and not caught.value.transient
    assert await provider.describe_instances() == []
    await request(sim, "POST", "/_sim/faults", {"action": "*", "ret_code": 5100, "times": 100})
    assert await request(sim, "DELETE", "/_sim/faults") == (200, {"ok": True})
    assert await provider.describe_instances() == []


async def test_bad_fault_requests_name_the_field(sim: Simulator) -> None:
    for body, field in (
        ({"ret_code": 1500}, "action"),
        ({"action": "X", "ret_code": "1500"}, "ret_code"),
        ({"action": "X", "times": 0}, "times"),
        ([1, 2], "object"),
    ):
        status, reply = await request(sim, "POST", "/_sim/faults", body)
        assert status == 400 and field in reply["error"]
