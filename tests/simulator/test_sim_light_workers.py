"""``--light-workers N``: light VMs (their SSH and agents) run in N worker processes.

In-process simulator with two workers: VMs spread over both, answer over SSH from their worker,
their agents render there, key pair changes reach the worker; a worker killed is reported (which
worker, how it died, its VMs), its VMs are down as after a guest crash, and a restart brings one back
on the surviving worker. Through pitrixd: a light cluster on two workers is created and deleted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from test_sim_light import connect, write_image

from bench.orchestration import create_active, delete_all
from bench.stack import running_stack
from simulator.cloud import Simulator
from simulator.light_pool import WorkerDied
from simulator.processes import vm_pids
from simulator.testing import admin, call, pid_alive, random_network, wait_job


@pytest.fixture
async def sharded(tmp_path: Path) -> AsyncIterator[Simulator]:
    write_image(tmp_path / "images")
    sim = Simulator(
        tmp_path / "sim",
        network=random_network(),
        images_dirs=[tmp_path / "images"],
        light=True,
        light_workers=2,
    )
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def boot_many(sim: Simulator, count: int) -> tuple[list[dict[str, Any]], asyncssh.SSHKey, str]:
    kp = await call(sim, "CreateKeyPair", {"encrypt_method": "ssh-ed25519"})
    run = await call(
        sim,
        "RunInstances",
        {
            "image_id": "lightimg",
            "count": count,
            "vxnets.1": "vxnet-0",
            "login_mode": "keypair",
            "login_keypair": kp["keypair_id"],
        },
    )
    assert await wait_job(sim, run["job_id"]) == "successful"
    params = {f"instances.{n}": iid for n, iid in enumerate(run["instances"], 1)}
    items = (await call(sim, "DescribeInstances", params))["instance_set"]
    return items, asyncssh.import_private_key(kp["private_key"]), kp["keypair_id"]


async def workers(sim: Simulator) -> list[dict[str, Any]]:
    status, body = await admin(sim, "GET", "/_sim/light-workers")
    assert status == 200
    return list(body["workers"])


async def test_light_vms_run_in_the_workers_and_a_dead_worker_is_reported(sharded: Simulator) -> None:
    sim = sharded
    pool = sim.fleet.light_workers
    assert pool is not None and len(sim.light_worker_pids) == 2
    items, key, keypair = await boot_many(sim, 4)
    iids = [i["instance_id"] for i in items]
    before = await workers(sim)
    assert [len(w["vms"]) for w in before] == [2, 2] and sorted(
        before[0]["vms"] + before[1]["vms"]
    ) == sorted(iids)
    for item in items:  # SSH from the worker, agent rendering there, no VM process anywhere
        async with connect(item, key) as conn:
            assert (await conn.run("hostname")).stdout == f"{item['instance_id']}\n"
        await pool.rounds(item["instance_id"])
        out = sim.fleet.vms_dir / item["instance_id"] / "root/etc/out.txt"
        assert out.read_text() == "hello from light\n"
    assert vm_pids(set(iids)) == {}

    # A key pair detached reaches the worker: the next login is refused.
    detach = await call(sim, "DetachKeyPairs", {"keypairs.1": keypair, "instances.1": iids[0]})
    assert await wait_job(sim, detach["job_id"]) == "successful"
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(items[0], key):
            pass

    dead = before[0]
    os.kill(dead["pid"], signal.SIGKILL)
    await asyncio.wait_for(pool.workers[0].ended.wait(), 10)
    after = await workers(sim)
    assert after[0]["alive"] is False and after[0]["exit_status"] == -signal.SIGKILL
    assert f"light worker 0 (pid {dead['pid']}) exited with status -9" in after[0]["error"]
    assert all(iid in after[0]["error"] for iid in dead["vms"]) and after[0]["vms"] == []
    assert after[1]["alive"] is True and after[1]["vms"] == before[1]["vms"]
    lost = next(i for i in items if i["instance_id"] in dead["vms"] and i["instance_id"] != iids[0])
    vm = sim.fleet.vm(lost["instance_id"])
    assert vm is not None and vm.status == "running" and vm.crashed  # as a guest crash looks
    with pytest.raises(OSError):
        async with connect(lost, key):
            pass

    restart = await call(sim, "RestartInstances", {"instances.1": lost["instance_id"]})
    assert await wait_job(sim, restart["job_id"]) == "successful"
    assert pool.worker_of(lost["instance_id"]) == 1 and not vm.crashed
    async with connect(lost, key) as conn:  # the same host key, now served by worker 1
        assert (await conn.run("hostname")).stdout == f"{lost['instance_id']}\n"

    terminate = await call(sim, "TerminateInstances", {f"instances.{n}": i for n, i in enumerate(iids, 1)})
    assert await wait_job(sim, terminate["job_id"]) == "successful"
    assert (await workers(sim))[1]["vms"] == []
    await sim.stop()
    assert not pid_alive(before[1]["pid"])


async def test_a_call_on_a_dead_worker_names_it(sharded: Simulator) -> None:
    pool = sharded.fleet.light_workers
    assert pool is not None
    for worker in pool.workers:
        os.kill(worker.pid, signal.SIGKILL)
        await asyncio.wait_for(worker.ended.wait(), 10)
    kp = await call(sharded, "CreateKeyPair", {"encrypt_method": "ssh-ed25519"})
    run = await call(
        sharded,
        "RunInstances",
        {
            "image_id": "demo",
            "vxnets.1": "vxnet-0",
            "login_mode": "keypair",
            "login_keypair": kp["keypair_id"],
        },
    )
    assert await wait_job(sharded, run["job_id"]) == "failed"
    [job] = (await call(sharded, "DescribeJobs", {"jobs.1": run["job_id"]}))["job_set"]
    assert "no light worker is alive" in job["error_msg"] and "exited with status -9" in job["error_msg"]
    with pytest.raises(WorkerDied, match="light worker 0"):
        await pool.workers[0].call("agents")


async def test_a_light_cluster_through_pitrixd_spreads_over_two_workers() -> None:
    """pitrixd creates a light cluster (SSH bootstrap of in-worker agents) and deletes it."""
    with tempfile.TemporaryDirectory(prefix="pitrix-lw-") as tmp:
        async with (
            running_stack(Path(tmp), "--light", "--light-workers", "2") as stack,
            stack.api() as api,
        ):
            assert stack.sim is not None and len(stack.sim.ready["light_worker_pids"]) == 2
            cid, _took = await create_active(api, "lw", "ssh", 120.0)
            nodes = {n["instance_id"] for n in (await api.get(f"/v1/clusters/{cid}"))["nodes"]}
            status, body = await sim_admin(stack.sim_url, "/_sim/light-workers")
            held = [set(w["vms"]) for w in body["workers"]]
            assert status == 200 and all(w["alive"] for w in body["workers"])
            # The 3 nodes on both workers (2 + 1); the metadata VM is a full VM, on neither.
            assert sorted(len(h) for h in held) == [1, 2] and held[0] | held[1] == nodes, (held, nodes)
            problems: list[str] = []
            await delete_all(api, [cid], problems)
            assert problems == []
            _status, body = await sim_admin(stack.sim_url, "/_sim/light-workers")
            assert [w["vms"] for w in body["workers"]] == [[], []]


async def sim_admin(url: str, path: str) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url + path) as response:
        return response.status, await response.json()
