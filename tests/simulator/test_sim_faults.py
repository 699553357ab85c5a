"""Every fault the simulator injects: API error and throttle rates, boot delay and failure, and the
per-VM faults (crash, slow commands, metadata cut and heal), with their admin endpoints' errors."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from pitrix.providers.base import InstanceSpec, ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from simulator.cloud import Simulator
from simulator.faults import Faults
from simulator.processes import vm_pids
from simulator.testing import Beacon, admin, call, daemon_userdata, pid_alive, wait_job

PASSWD = {"vxnets.1": "vxnet-0", "login_mode": "passwd", "login_passwd": "Secret123"}


async def run_one(sim: Simulator, userdata: str = "", **extra: object) -> tuple[str, str]:
    params: dict[str, object] = {"image_id": "pitrix-metadata", **PASSWD, **extra}
    if userdata:
        params.update(
            need_userdata=1, userdata_type="exec", userdata_value=base64.b64encode(userdata.encode()).decode()
        )
    reply = await call(sim, "RunInstances", params)
    assert reply["ret_code"] == 0, reply
    return reply["instances"][0], reply["job_id"]


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """A kernel state change has no event to await: check it each loop turn, up to a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


# -- API rates ---------------------------------------------------------------------------------------


def test_rates_are_probabilities_replayable_by_seed() -> None:
    def outcomes(seed: int) -> list[int]:
        faults = Faults(seed)
        faults.set_rates("DescribeInstances", error=0.25, throttle=0.25, ret_code=5100)
        return [(f.ret_code if (f := faults.take("DescribeInstances")) else 0) for _ in range(2000)]

    first = outcomes(7)
    assert first == outcomes(7)
    assert set(first) == {0, 1500, 5100}
    assert 0.4 < first.count(0) / len(first) < 0.6  # 2000 draws: far from these bounds by chance
    faults = Faults(1)
    faults.set_rates("*", throttle=1.0)
    taken = faults.take("RunInstances")
    assert taken is not None and taken.ret_code == 1500
    faults.set_rates("*")  # all zero: the rate is gone
    assert faults.take("RunInstances") is None


async def test_rate_faults_on_the_wire_and_the_provider_retrying_through_them(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    status, body = await admin(
        sim, "PUT", "/_sim/faults/rates", {"action": "DescribeJobs", "error": 1.0, "ret_code": 5100}
    )
    assert status == 200 and body["rates"]["DescribeJobs"]["error"] == 1.0
    reply = await call(sim, "DescribeJobs")
    assert reply["ret_code"] == 5100 and "ServerBusy" in reply["message"]
    await admin(sim, "PUT", "/_sim/faults/rates", {"action": "DescribeInstances", "throttle": 1.0})
    throttled = await call(sim, "DescribeInstances")
    assert throttled == {"ret_code": 1500, "message": "request throttled, too many requests"}
    assert (await call(sim, "DescribeKeyPairs"))["ret_code"] == 0  # other actions are untouched

    sim.faults.seed(3)
    await admin(sim, "PUT", "/_sim/faults/rates", {"action": "DescribeInstances", "throttle": 0.5})
    for _ in range(5):  # the client's backoff retries get through half-throttled calls
        assert await provider.describe_instances() == []
    assert await admin(sim, "DELETE", "/_sim/faults") == (200, {"ok": True})
    assert (await call(sim, "DescribeJobs"))["ret_code"] == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/_sim/faults/rates", {"error": 0.1}, "action"),
        ("/_sim/faults/rates", {"action": "X", "error": 1.5}, "error"),
        ("/_sim/faults/rates", {"action": "X", "throttle": "half"}, "throttle"),
        ("/_sim/faults/rates", {"action": "X", "error": 0.6, "throttle": 0.6}, "together"),
        ("/_sim/faults/rates", {"action": "X", "error": 0.1, "ret_code": 0}, "ret_code"),
        ("/_sim/faults/boot", {"delay_min": 2, "delay_max": 1}, "delay"),
        ("/_sim/faults/boot", {"failure_rate": -0.1}, "failure_rate"),
        ("/_sim/faults/boot", [1], "object"),
        ("/_sim/faults/boot", {"fail_next": 1.5}, "fail_next"),
        ("/_sim/faults/boot", {"fail_next": -1}, "fail_next"),
    ],
)
async def test_bad_fault_settings_name_the_field(sim: Simulator, path: str, body: Any, field: str) -> None:
    status, reply = await admin(sim, "PUT", path, body)
    assert status == 400 and field in reply["error"], reply


# -- boot faults -------------------------------------------------------------------------------------


async def test_a_failed_boot_fails_its_job_and_leaves_the_vm_stopped(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    await admin(sim, "PUT", "/_sim/faults/boot", {"failure_rate": 1.0})
    iid, job = await run_one(sim)
    assert await wait_job(sim, job) == "failed"
    [described] = (await call(sim, "DescribeJobs", {"jobs.1": job}))["job_set"]
    assert "injected boot failure" in described["error_msg"]
    [vm] = (await call(sim, "DescribeInstances", {"instances.1": iid}))["instance_set"]
    assert vm["status"] == "stopped" and vm["transition_status"] == ""
    with pytest.raises(ProviderError) as caught:
        await provider.wait_running([iid], timeout=10)
    assert caught.value.code == "not-running"

    start = await call(sim, "StartInstances", {"instances.1": iid})
    assert await wait_job(sim, start["job_id"]) == "failed"  # the host is still bad
    await admin(sim, "PUT", "/_sim/faults/boot", {})
    start = await call(sim, "StartInstances", {"instances.1": iid})
    assert await wait_job(sim, start["job_id"]) == "successful"
    await provider.wait_running([iid], timeout=10)


async def test_fail_next_fails_exactly_that_many_boots(sim: Simulator) -> None:
    status, described = await admin(sim, "PUT", "/_sim/faults/boot", {"fail_next": 2})
    assert status == 200 and described["boot"]["fail_next"] == 2
    outcomes = []
    for _ in range(3):
        _iid, job = await run_one(sim)
        outcomes.append(await wait_job(sim, job))
    assert outcomes == ["failed", "failed", "successful"]
    assert sim.faults.describe()["boot"] == {
        "delay_min": 0.0, "delay_max": 0.0, "failure_rate": 0.0, "fail_next": 0,
    }  # fmt: skip


async def test_boot_delay_keeps_the_vm_pending_for_a_while(sim: Simulator) -> None:
    status, _ = await admin(sim, "PUT", "/_sim/faults/boot", {"delay_min": 0.3, "delay_max": 0.3})
    assert status == 200
    started = time.monotonic()
    iid, job = await run_one(sim)
    [vm] = (await call(sim, "DescribeInstances", {"instances.1": iid}))["instance_set"]
    assert vm["status"] == "pending" and vm["transition_status"] == "creating"
    assert vm["ssh_host_key"] == ""  # no host key before the first boot
    status, console = await admin(sim, "GET", f"/_sim/instances/{iid}/console")
    assert status == 200 and console["output"] == "" and console["ssh_host_key"] == ""
    assert await wait_job(sim, job) == "successful"
    assert time.monotonic() - started >= 0.3  # a lower bound only: never flaky
    assert sim.faults.boot_delay() == 0.3


# -- faults on one VM --------------------------------------------------------------------------------


async def test_crash_kills_everything_but_the_cloud_says_running_until_restart(
    sim: Simulator, beacon: Beacon
) -> None:
    kp = await call(sim, "CreateKeyPair", {"encrypt_method": "ssh-ed25519"})
    key = asyncssh.import_private_key(kp["private_key"])
    iid, job = await run_one(
        sim, daemon_userdata(beacon.port), login_mode="keypair", login_keypair=kp["keypair_id"]
    )
    assert await wait_job(sim, job) == "successful"
    _, pid, _, _ = (await beacon.next()).split()
    ip = sim.fleet.vm(iid).ip  # type: ignore[union-attr]

    status, body = await admin(sim, "POST", f"/_sim/instances/{iid}/crash")
    assert status == 200 and body["processes"] >= 1
    assert not pid_alive(int(pid)) and vm_pids({iid}) == {}
    [vm] = (await call(sim, "DescribeInstances", {"instances.1": iid}))["instance_set"]
    assert vm["status"] == "running"
    with pytest.raises(OSError):
        await asyncssh.connect(ip, 2222, username="root", client_keys=[key], known_hosts=None)
    assert (await admin(sim, "GET", f"/_sim/instances/{iid}/console"))[1]["output"] == ""
    assert (await call(sim, "StartInstances", {"instances.1": iid}))["ret_code"] == 2500

    restart = await call(sim, "RestartInstances", {"instances.1": iid})
    assert restart["action"] == "RestartInstancesResponse"
    assert await wait_job(sim, restart["job_id"]) == "successful"
    assert (await beacon.next()).split()[0] == iid  # userdata ran again
    async with asyncssh.connect(ip, 2222, username="root", client_keys=[key], known_hosts=None) as conn:
        assert (await conn.run("echo up")).stdout == "up\n"


async def test_restart_power_cycles_and_refuses_what_is_not_running(sim: Simulator, beacon: Beacon) -> None:
    iid, job = await run_one(sim, daemon_userdata(beacon.port))
    assert await wait_job(sim, job) == "successful"
    first_pid = int((await beacon.next()).split()[1])
    restart = await call(sim, "RestartInstances", {"instances.1": iid})
    [vm] = (await call(sim, "DescribeInstances", {"instances.1": iid}))["instance_set"]
    assert vm["transition_status"] == "restarting"
    assert (await call(sim, "RestartInstances", {"instances.1": iid}))["ret_code"] == 2500
    assert await wait_job(sim, restart["job_id"]) == "successful"
    second_pid = int((await beacon.next()).split()[1])
    assert second_pid != first_pid and not pid_alive(first_pid)
    boots = (sim.fleet.vms_dir / iid / "root/var/log/boots").read_text().splitlines()
    assert len(boots) == 2
    stop = await call(sim, "StopInstances", {"instances.1": iid})
    assert await wait_job(sim, stop["job_id"]) == "successful"
    refused = await call(sim, "RestartInstances", {"instances.1": iid})
    assert refused["ret_code"] == 2500 and "stopped" in refused["message"]
    assert (await call(sim, "RestartInstances", {"instances.1": "i-nothere0"}))["ret_code"] == 2100
    assert (await call(sim, "RestartInstances"))["ret_code"] == 1100


async def test_provider_restart_skips_what_is_not_running(
    sim: Simulator, provider: QingCloudProvider, beacon: Beacon
) -> None:
    created = await provider.run_instances(
        [
            InstanceSpec(name=f"rs-{n}", image="pitrix-metadata", userdata=daemon_userdata(beacon.port))
            for n in range(2)
        ]
    )
    ids = [i.instance_id for i in created]
    await provider.wait_running(ids, timeout=10)
    await beacon.next()
    await beacon.next()
    await provider.stop_instances(ids[1:])
    await provider.restart_instances(ids)
    assert (await beacon.next()).split()[0] == ids[0]
    assert [sim.fleet.vm(i).boots for i in ids] == [2, 1]  # type: ignore[union-attr]
    assert {i.instance_id: i.status for i in await provider.describe_instances(instance_ids=ids)} == {
        ids[0]: "running",
        ids[1]: "stopped",
    }


async def test_slow_commands_wait_before_running(sim: Simulator) -> None:
    kp = await call(sim, "CreateKeyPair", {"encrypt_method": "ssh-ed25519"})
    key = asyncssh.import_private_key(kp["private_key"])
    iid, job = await run_one(sim, login_mode="keypair", login_keypair=kp["keypair_id"])
    assert await wait_job(sim, job) == "successful"
    ip = sim.fleet.vm(iid).ip  # type: ignore[union-attr]
    assert (await admin(sim, "PUT", f"/_sim/instances/{iid}/slow", {"seconds": 0.4}))[0] == 200
    async with asyncssh.connect(ip, 2222, username="root", client_keys=[key], known_hosts=None) as conn:
        started = time.monotonic()
        assert (await conn.run("echo slow")).stdout == "slow\n"
        assert time.monotonic() - started >= 0.4  # a lower bound only
        await admin(sim, "PUT", f"/_sim/instances/{iid}/slow", {"seconds": 0})
        assert sim.fleet.vm(iid).command_delay == 0  # type: ignore[union-attr]
    status, body = await admin(sim, "PUT", f"/_sim/instances/{iid}/slow", {})
    assert status == 400 and "seconds" in body["error"]
    status, body = await admin(sim, "PUT", f"/_sim/instances/{iid}/slow", {"seconds": -1})
    assert status == 400 and "seconds" in body["error"]


FAKE_AGENT = """#!/bin/sh
python3 -c 'import time; time.sleep(600)' pitrix-agent -config-file etc/pitrix/agent.toml &
echo $! > var/run-agent.pid
python3 -c 'import time; time.sleep(600)' web &
echo $! > var/run-web.pid
"""


async def test_cut_freezes_only_the_agent_and_heal_thaws_it(sim: Simulator) -> None:
    iid, job = await run_one(sim, FAKE_AGENT)
    assert await wait_job(sim, job) == "successful"
    root = sim.fleet.vms_dir / iid / "root"
    vm = sim.fleet.vm(iid)
    assert vm is not None
    await vm.userdata_finished()
    agent, web = (int((root / f"var/run-{n}.pid").read_text()) for n in ("agent", "web"))
    # The pid file is written right after the fork: until its exec the process is still `sh`,
    # which no agent marker matches (and its parent, the userdata, may be gone already).
    await until(lambda: b"pitrix-agent" in Path(f"/proc/{agent}/cmdline").read_bytes())

    status, body = await admin(sim, "POST", f"/_sim/instances/{iid}/cut")
    assert status == 200 and body["agents"] == 1
    await until(lambda: process_state(agent) == "T")
    assert process_state(web) != "T"
    status, body = await admin(sim, "POST", f"/_sim/instances/{iid}/heal")
    assert status == 200 and body["agents"] == 1
    await until(lambda: process_state(agent) != "T")
    assert (await admin(sim, "POST", f"/_sim/instances/{iid}/heal"))[1]["agents"] == 0  # nothing cut

    await admin(sim, "POST", f"/_sim/instances/{iid}/cut")
    await until(lambda: process_state(agent) == "T")
    stop = await call(sim, "StopInstances", {"instances.1": iid})  # a frozen agent still dies at once
    assert await wait_job(sim, stop["job_id"]) == "successful"
    assert not pid_alive(agent) and not pid_alive(web)


async def test_vm_fault_endpoints_refuse_unknown_and_halted_vms(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    for verb in ("crash", "cut", "heal"):
        status, body = await admin(sim, "POST", f"/_sim/instances/i-nothere0/{verb}")
        assert status == 404 and "i-nothere0" in body["error"]
    [instance] = await provider.run_instances([InstanceSpec(name="halt", image="pitrix-metadata")])
    await provider.wait_running([instance.instance_id], timeout=10)
    await provider.stop_instances([instance.instance_id])
    for verb in ("crash", "cut"):
        status, body = await admin(sim, "POST", f"/_sim/instances/{instance.instance_id}/{verb}")
        assert status == 409 and body["ret_code"] == 2500
