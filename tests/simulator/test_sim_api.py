"""The simulator's QingCloud API on the wire: authentication, error shapes, actions, jobs."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from pitrix.providers.qingcloud.signer import signed_params
from simulator.cloud import Simulator
from simulator.testing import call, wait_job


async def test_unknown_action_has_qingcloud_error_shape(sim: Simulator) -> None:
    reply = await call(sim, "LaunchRockets")
    assert reply == {
        "ret_code": 1100,
        "message": "InvalidParameterError, action [LaunchRockets] is not supported",
    }


async def test_get_and_post_are_both_signed_and_accepted(sim: Simulator) -> None:
    for method in ("GET", "POST"):
        reply = await call(sim, "DescribeInstances", method=method)
        assert reply == {
            "action": "DescribeInstancesResponse",
            "ret_code": 0,
            "instance_set": [],
            "total_count": 0,
        }


@pytest.mark.parametrize(
    ("kwargs", "ret_code", "text"),
    [
        ({"secret": "wrong"}, 1200, "signature not matched"),
        ({"drop": ("time_stamp",)}, 1100, "time_stamp"),
        ({"drop": ("signature",)}, 1100, "signature"),
        ({"now": datetime.now(UTC) - timedelta(hours=1)}, 1300, "expired"),
        ({"now": datetime.now(UTC) + timedelta(hours=1)}, 1300, "expired"),
    ],
)
async def test_authentication_failures(
    sim: Simulator, kwargs: dict[str, Any], ret_code: int, text: str
) -> None:
    reply = await call(sim, "DescribeInstances", **kwargs)
    assert reply["ret_code"] == ret_code and text in reply["message"]
    assert set(reply) == {"ret_code", "message"}


async def test_signature_over_get_does_not_verify_as_post(sim: Simulator) -> None:
    creds = sim.credentials
    body = signed_params(
        {"action": "DescribeInstances", "zone": sim.zone},
        access_key_id=creds["access_key_id"],
        secret_access_key=creds["secret_access_key"],
        method="GET",
    )
    async with aiohttp.ClientSession() as session, session.post(sim.url + "/iaas/", data=body) as response:
        assert (await response.json())["ret_code"] == 1200


async def test_unknown_access_key(tmp_path: Any) -> None:
    sim = Simulator(
        tmp_path, network="127.99.1.0/24", credentials={"access_key_id": "A", "secret_access_key": "S"}
    )
    await sim.start()
    try:
        body = signed_params(
            {"action": "DescribeJobs", "zone": "sim1"}, access_key_id="B", secret_access_key="S"
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(sim.url + "/iaas/", data=body) as response,
        ):
            reply = await response.json()
        assert reply == {"ret_code": 1200, "message": "AuthFailure, access key id [B] does not exist"}
    finally:
        await sim.stop()


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"image_id": "pitrix-metadata"}, "[login_mode]"),
        ({"image_id": "pitrix-metadata", "vxnets.1": "vxnet-0", "login_mode": "keypair"}, "[login_keypair]"),
        (
            {
                "image_id": "pitrix-metadata",
                "vxnets.1": "vxnet-0",
                "login_mode": "passwd",
                "login_passwd": "x",
                "count": "two",
            },
            "[count]",
        ),
        (
            {
                "image_id": "pitrix-metadata",
                "vxnets.1": "vxnet-0",
                "login_mode": "passwd",
                "login_passwd": "x",
                "count": 0,
            },
            "[count]",
        ),
        (
            {
                "image_id": "pitrix-metadata",
                "vxnets.1": "vxnet-0",
                "login_mode": "passwd",
                "login_passwd": "x",
                "cpu": 999,
            },
            "[cpu]",
        ),
        (
            {
                "image_id": "pitrix-metadata",
                "vxnets.1": "vxnet-0",
                "login_mode": "passwd",
                "login_passwd": "x",
                "need_userdata": 1,
                "userdata_type": "plain",
                "userdata_value": "!!not base64!!",
            },
            "[userdata_value]",
        ),
        (
            {
                "image_id": "pitrix-metadata",
                "vxnets.1": "vxnet-0",
                "login_mode": "passwd",
                "login_passwd": "x",
                "need_userdata": 1,
                "userdata_type": "zip",
                "userdata_value": "eA==",
            },
            "[userdata_type]",
        ),
        (
            {
                "image_id": "pitrix-metadata",
                "vxnets.1": "vxnet-0",
                "login_mode": "passwd",
                "login_passwd": "x",
                "need_userdata": 1,
                "userdata_type": "tar",
                "userdata_value": "uda-nothere",
            },
            "[uda-nothere] not found",
        ),
        ({"image_id": "pitrix-metadata", "login_mode": "passwd", "login_passwd": "x"}, "[vxnets.1]"),
        (
            {
                "image_id": "pitrix-metadata",
                "vxnets.1": "vxnet-nothere",
                "login_mode": "passwd",
                "login_passwd": "x",
            },
            "[vxnet-nothere] not found",
        ),
        (
            {"image_id": "../etc", "vxnets.1": "vxnet-0", "login_mode": "passwd", "login_passwd": "x"},
            "not a valid image name",
        ),
    ],
)
async def test_bad_run_parameters_name_the_field(
    sim: Simulator, params: dict[str, object], text: str
) -> None:
    reply = await call(sim, "RunInstances", params)
    assert reply["ret_code"] in (1100, 2100) and text in reply["message"], reply
    assert sim.ledger() == []


async def test_run_describe_terminate_with_jobs(sim: Simulator) -> None:
    sim.fleet.vxnets.create("vxnet-abc")
    script = base64.b64encode(b"echo hello from $PITRIX_VM_ID\n").decode()
    keypair = (await call(sim, "CreateKeyPair", {"encrypt_method": "ssh-ed25519"}))["keypair_id"]
    reply = await call(
        sim,
        "RunInstances",
        {
            "image_id": "pitrix-metadata",
            "count": 3,
            "instance_name": "trio",
            "login_mode": "keypair",
            "login_keypair": keypair,
            "vxnets.1": "vxnet-abc",
            "cpu": 2,
            "memory": 2048,
            "need_userdata": 1,
            "userdata_type": "exec",
            "userdata_value": script,
        },
    )
    assert reply["action"] == "RunInstancesResponse" and reply["ret_code"] == 0
    ids = reply["instances"]
    assert len(ids) == 3 and len(set(ids)) == 3 and reply["job_id"].startswith("j-")
    assert await wait_job(sim, reply["job_id"]) == "successful"

    described = await call(sim, "DescribeInstances", {"instances.1": ids[0], "verbose": 1})
    [item] = described["instance_set"]
    assert described["total_count"] == 1
    assert item["instance_id"] == ids[0] and item["instance_name"] == "trio" and item["status"] == "running"
    assert item["vcpus_current"] == 2 and item["memory_current"] == 2048 and item["keypair_ids"] == [keypair]
    assert item["vxnets"][0]["vxnet_id"] == "vxnet-abc" and item["image"]["image_id"] == "pitrix-metadata"
    assert item["transition_status"] == "" and "create_time" in item and "login_mode" in item
    ips = sorted(e["ip"] for e in sim.ledger())
    net = sim.pool.network
    assert ips == sorted(str(net.network_address + n) for n in (2, 3, 4))
    vm = sim.fleet.vm(ids[1])
    assert vm is not None and await asyncio.wait_for(vm.userdata_finished(), 10) == 0
    log = (sim.state_dir / "vms" / ids[1] / "root/var/log/userdata.log").read_text()
    assert log == f"hello from {ids[1]}\n"

    page = await call(sim, "DescribeInstances", {"search_word": "TRI", "offset": 1, "limit": 1})
    assert page["total_count"] == 3 and len(page["instance_set"]) == 1
    assert (await call(sim, "DescribeInstances", {"status.1": "stopped"}))["total_count"] == 0
    bad = await call(sim, "DescribeInstances", {"status.1": "exploded"})
    assert bad["ret_code"] == 1100 and "[status]" in bad["message"]

    term = await call(sim, "TerminateInstances", {"instances.1": ids[0], "instances.2": ids[1]})
    assert term["action"] == "TerminateInstancesResponse"
    assert await wait_job(sim, term["job_id"]) == "successful"
    again = await call(sim, "TerminateInstances", {"instances.1": ids[0]})
    assert again["ret_code"] == 2500
    missing = await call(sim, "TerminateInstances", {"instances.1": "i-nothere"})
    assert missing["ret_code"] == 2100 and "i-nothere" in missing["message"]
    empty = await call(sim, "TerminateInstances")
    assert empty["ret_code"] == 1100 and "[instances]" in empty["message"]
    terminated = await call(sim, "DescribeInstances", {"status.1": "terminated"})
    assert sorted(i["instance_id"] for i in terminated["instance_set"]) == sorted(ids[:2])
    assert all(i["vxnets"][0]["private_ip"] == "" for i in terminated["instance_set"])


async def test_job_goes_pending_working_successful(sim: Simulator) -> None:
    from simulator.fleet import RunRequest

    ids, job = sim.fleet.run(RunRequest(image_id="pitrix-metadata", count=2))
    assert job.status == "pending"  # the API answers before any work starts
    assert {sim.fleet.vm(i).status for i in ids} == {"pending"}  # type: ignore[union-attr]
    await asyncio.sleep(0)  # let the job's task take its first step
    assert job.status == "working"
    assert await wait_job(sim, job.job_id) == "successful"
    assert {sim.fleet.vm(i).status for i in ids} == {"running"}  # type: ignore[union-attr]


async def test_stop_start_wrong_states(sim: Simulator) -> None:
    reply = await call(
        sim,
        "RunInstances",
        {"image_id": "pitrix-metadata", "vxnets.1": "vxnet-0", "login_mode": "passwd", "login_passwd": "x"},
    )
    [iid] = reply["instances"]
    await wait_job(sim, reply["job_id"])
    started = await call(sim, "StartInstances", {"instances.1": iid})
    assert started["ret_code"] == 2500 and "not stopped" in started["message"]
    stop = await call(sim, "StopInstances", {"instances.1": iid, "force": 1})
    assert await wait_job(sim, stop["job_id"]) == "successful"
    stop_again = await call(sim, "StopInstances", {"instances.1": iid})
    assert stop_again["ret_code"] == 2500
    start = await call(sim, "StartInstances", {"instances.1": iid})
    assert await wait_job(sim, start["job_id"]) == "successful"
    assert sim.fleet.vm(iid).boots == 2  # type: ignore[union-attr]


async def test_injected_fault_then_normal_service(sim: Simulator) -> None:
    sim.faults.inject("*", 5100, times=1, message="ServerBusy")
    assert await call(sim, "DescribeJobs") == {"ret_code": 5100, "message": "ServerBusy"}
    assert (await call(sim, "DescribeJobs"))["ret_code"] == 0


async def test_network_exhaustion_is_quota_exceeded(tmp_path: Any) -> None:
    sim = Simulator(tmp_path, network="127.99.2.0/30")  # room for one VM: .2
    await sim.start()
    try:
        ok = await call(
            sim,
            "RunInstances",
            {
                "image_id": "pitrix-metadata",
                "vxnets.1": "vxnet-0",
                "login_mode": "passwd",
                "login_passwd": "x",
            },
        )
        assert ok["ret_code"] == 0
        full = await call(
            sim,
            "RunInstances",
            {
                "image_id": "pitrix-metadata",
                "vxnets.1": "vxnet-0",
                "login_mode": "passwd",
                "login_passwd": "x",
            },
        )
        assert full["ret_code"] == 2600 and "no free address" in full["message"]
    finally:
        await sim.stop()
