"""Volumes on the wire (QingCloud's actions, shapes and error codes) and as the simulator's own
directories: attached into a VM's root, kept across stop and start, gone when deleted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from pitrix.providers.base import InstanceSpec, VolumeSpec
from pitrix.providers.qingcloud import QingCloudProvider
from simulator.cloud import Simulator
from simulator.testing import call, random_network, wait_job
from simulator.volumes import SimVolume, make_volume_dir


async def _vm(sim: Simulator) -> str:
    run = await call(
        sim,
        "RunInstances",
        {"image_id": "plain", "vxnets.1": "vxnet-0", "login_mode": "passwd", "login_passwd": "Secret123"},
    )
    [iid] = run["instances"]
    assert await wait_job(sim, run["job_id"]) == "successful"
    return str(iid)


async def _volume(sim: Simulator, name: str = "v", size: int = 10) -> str:
    reply = await call(sim, "CreateVolumes", {"size": size, "volume_name": name})
    assert reply["ret_code"] == 0, reply
    [vid] = reply["volumes"]
    assert vid.startswith("vol-")
    assert await wait_job(sim, reply["job_id"]) == "successful"
    return str(vid)


async def _one(sim: Simulator, vid: str) -> dict[str, Any]:
    [item] = (await call(sim, "DescribeVolumes", {"volumes.1": vid}))["volume_set"]
    return dict(item)


def _root(sim: Simulator, iid: str) -> Path:
    vm = sim.fleet.vm(iid)
    assert vm is not None
    return vm.root


async def test_a_volume_is_a_directory_attached_into_the_vm_root(sim: Simulator) -> None:
    iid = await _vm(sim)
    vid = await _volume(sim, "data-1", 20)
    item = await _one(sim, vid)
    assert (item["volume_name"], item["size"], item["status"], item["instance"]) == (
        "data-1",
        20,
        "available",
        {},
    )
    data = sim.state_dir / "volumes" / vid / "data"
    assert data.is_dir()
    [entry] = sim.volume_ledger()
    assert entry["volume_id"] == vid and entry["path"] == str(data) and entry["deleted"] is None

    attach = await call(sim, "AttachVolumes", {"volumes.1": vid, "instance": iid})
    assert await wait_job(sim, attach["job_id"]) == "successful"
    item = await _one(sim, vid)
    assert item["status"] == "in-use"
    assert item["instance"] == {"instance_id": iid, "instance_name": "", "device": "/dev/vdb"}
    device = _root(sim, iid) / "dev" / "vdb"
    assert device.is_dir() and device.resolve() == data.resolve()
    (device / "hello").write_text("kept")
    [described] = (await call(sim, "DescribeInstances", {"instances.1": iid, "verbose": 1}))["instance_set"]
    assert described["volume_ids"] == [vid]

    # Stop and start: the device entry and the data stay.
    stop = await call(sim, "StopInstances", {"instances.1": iid})
    assert await wait_job(sim, stop["job_id"]) == "successful"
    start = await call(sim, "StartInstances", {"instances.1": iid})
    assert await wait_job(sim, start["job_id"]) == "successful"
    assert (device / "hello").read_text() == "kept" and (await _one(sim, vid))["status"] == "in-use"

    detach = await call(sim, "DetachVolumes", {"volumes.1": vid, "instance": iid})
    assert await wait_job(sim, detach["job_id"]) == "successful"
    assert not device.exists() and not device.is_symlink()
    assert (data / "hello").read_text() == "kept"  # detached, not erased
    assert (await _one(sim, vid))["status"] == "available"

    delete = await call(sim, "DeleteVolumes", {"volumes.1": vid})
    assert await wait_job(sim, delete["job_id"]) == "successful"
    assert not data.exists()
    assert (await call(sim, "DescribeVolumes", {"volumes.1": vid}))["volume_set"] == []
    [entry] = sim.volume_ledger()
    assert entry["status"] == "deleted" and entry["deleted"]


async def test_wrong_status_is_2500_and_unknown_is_2100(sim: Simulator) -> None:
    iid = await _vm(sim)
    other = await _vm(sim)
    vid = await _volume(sim)
    attach = await call(sim, "AttachVolumes", {"volumes.1": vid, "instance": iid})
    assert await wait_job(sim, attach["job_id"]) == "successful"
    again = await call(sim, "AttachVolumes", {"volumes.1": vid, "instance": other})
    assert again["ret_code"] == 2500 and vid in again["message"]
    assert (await call(sim, "DeleteVolumes", {"volumes.1": vid}))["ret_code"] == 2500  # still attached
    assert (await call(sim, "DetachVolumes", {"volumes.1": vid, "instance": other}))["ret_code"] == 2500
    assert (await call(sim, "AttachVolumes", {"volumes.1": "vol-nevrwas0", "instance": iid}))[
        "ret_code"
    ] == 2100
    assert (await call(sim, "AttachVolumes", {"volumes.1": vid, "instance": "i-nevrwas0"}))[
        "ret_code"
    ] == 2100
    assert (await call(sim, "DeleteVolumes", {"volumes.1": "vol-nevrwas0"}))["ret_code"] == 2100
    for params, field in (
        ({}, "[size]"),
        ({"size": "big"}, "[size]"),
        ({"size": 10, "count": 0}, "[count]"),
    ):
        reply = await call(sim, "CreateVolumes", params)
        assert reply["ret_code"] == 1100 and field in reply["message"], reply
    assert (await call(sim, "AttachVolumes", {"instance": iid}))["ret_code"] == 1100
    assert (await call(sim, "DescribeVolumes", {"status.1": "melted"}))["ret_code"] == 1100


async def test_terminating_the_vm_detaches_its_volume_and_keeps_the_data(sim: Simulator) -> None:
    iid = await _vm(sim)
    vid = await _volume(sim)
    attach = await call(sim, "AttachVolumes", {"volumes.1": vid, "instance": iid})
    assert await wait_job(sim, attach["job_id"]) == "successful"
    (_root(sim, iid) / "dev" / "vdb" / "f").write_text("x")
    terminate = await call(sim, "TerminateInstances", {"instances.1": iid})
    assert await wait_job(sim, terminate["job_id"]) == "successful"
    item = await _one(sim, vid)
    assert item["status"] == "available" and item["instance"] == {}
    assert (sim.state_dir / "volumes" / vid / "data" / "f").read_text() == "x"


async def test_describe_filters_by_name_instance_and_status(sim: Simulator) -> None:
    iid = await _vm(sim)
    a = await _volume(sim, "alpha")
    b = await _volume(sim, "alphabet")
    await _volume(sim, "beta")
    attach = await call(sim, "AttachVolumes", {"volumes.1": b, "instance": iid})
    assert await wait_job(sim, attach["job_id"]) == "successful"
    found = await call(sim, "DescribeVolumes", {"search_word": "alpha"})
    assert found["total_count"] == 2 and [v["volume_id"] for v in found["volume_set"]] == [b, a]
    assert [
        v["volume_id"] for v in (await call(sim, "DescribeVolumes", {"instance_id": iid}))["volume_set"]
    ] == [b]
    in_use = await call(sim, "DescribeVolumes", {"status.1": "in-use"})
    assert [v["volume_id"] for v in in_use["volume_set"]] == [b]
    page = await call(sim, "DescribeVolumes", {"offset": 1, "limit": 1})
    assert page["total_count"] == 3 and len(page["volume_set"]) == 1


async def test_a_stopped_simulator_leaves_no_volume_directory(tmp_path: Path) -> None:
    async with Simulator(tmp_path / "sim", network=random_network()) as sim:
        vid = await _volume(sim)
        assert (tmp_path / "sim" / "volumes" / vid).is_dir()
    assert list((tmp_path / "sim" / "volumes").iterdir()) == []
    assert [e["status"] for e in sim.volume_ledger()] == ["deleted"]


async def test_the_provider_calls_are_idempotent(sim: Simulator, provider: QingCloudProvider) -> None:
    [instance] = await provider.run_instances([InstanceSpec(name="vt-n1", image="plain")])
    await provider.wait_running([instance.instance_id], timeout=30)
    created = await provider.create_volume(VolumeSpec(name="vt-n1-vol", size=10))
    assert created.status == "available" and created.name == "vt-n1-vol" and created.size == 10
    assert [v.volume_id for v in await provider.describe_volumes(name_prefix="vt-")] == [created.volume_id]
    assert await provider.describe_volumes(name_prefix="vt-n2") == []
    attached = await provider.attach_volume(created.volume_id, instance.instance_id)
    again = await provider.attach_volume(created.volume_id, instance.instance_id)
    assert attached.instance_id == again.instance_id == instance.instance_id
    assert attached.device_paths == again.device_paths == ("/dev/vdb",)
    await provider.detach_volume(created.volume_id)
    await provider.detach_volume(created.volume_id)
    [detached] = await provider.describe_volumes(volume_ids=[created.volume_id])
    assert detached.status == "available" and not detached.instance_id
    await provider.attach_volume(created.volume_id, instance.instance_id)
    await provider.delete_volumes([created.volume_id])  # detaches first
    await provider.delete_volumes([created.volume_id])
    assert await provider.describe_volumes(volume_ids=[created.volume_id]) == []
    await provider.terminate_instances([instance.instance_id])


async def _keystone_token(http: aiohttp.ClientSession, sim: Simulator) -> tuple[str, str]:
    """A token and the Cinder endpoint from the simulator's Keystone catalog."""
    creds = sim.credentials
    auth = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": creds["access_key_id"],
                        "password": creds["secret_access_key"],
                        "domain": {"name": "Default"},
                    }
                },
            },
            "scope": {"project": {"name": "pitrix", "domain": {"name": "Default"}}},
        }
    }
    async with http.post(f"{sim.url}/identity/v3/auth/tokens", json=auth) as response:
        assert response.status == 201
        catalog = (await response.json())["token"]["catalog"]
        token = response.headers["X-Subject-Token"]
    [cinder] = [s for s in catalog if s["type"] == "block-storage"]
    return token, cinder["endpoints"][0]["url"]


async def test_cinder_and_nova_attachments_refuse_as_openstack_does(sim: Simulator) -> None:
    iid = await _vm(sim)
    async with aiohttp.ClientSession() as http:
        token, cinder = await _keystone_token(http, sim)
        headers = {"X-Auth-Token": token}
        nova = f"{sim.url}/compute/v2.1/servers/{iid}/os-volume_attachments"
        async with http.post(f"{cinder}/volumes", json={"volume": {"size": 0}}, headers=headers) as bad:
            assert bad.status == 400 and "size" in (await bad.json())["badRequest"]["message"]
        async with http.post(
            f"{cinder}/volumes", json={"volume": {"size": 5, "name": "os"}}, headers=headers
        ) as r:
            assert r.status == 202
            vid = (await r.json())["volume"]["id"]
        job = sim.fleet.jobs.all()[-1]
        assert await wait_job(sim, job.job_id) == "successful"
        async with http.post(nova, json={"volumeAttachment": {"volumeId": vid}}, headers=headers) as r:
            assert r.status == 200 and (await r.json())["volumeAttachment"]["device"] == "/dev/vdb"
        async with http.post(nova, json={"volumeAttachment": {"volumeId": vid}}, headers=headers) as r:
            assert r.status == 400  # attaching (or in use) already
        async with http.delete(f"{cinder}/volumes/{vid}", headers=headers) as r:
            assert r.status == 400 and "status" in (await r.json())["badRequest"]["message"]
        async with http.get(f"{cinder}/volumes/vol-nevrwas0", headers=headers) as r:
            assert r.status == 404 and "itemNotFound" in await r.json()
        async with http.get(f"{cinder}/volumes/detail", headers={"X-Auth-Token": "forged"}) as r:
            assert r.status == 401


async def test_attach_waits_for_a_volume_found_while_its_create_still_runs(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    """A step repeated after a crash finds its volume by name, maybe still ``pending``: attaching
    waits for it instead of failing with 2500."""
    iid = await _vm(sim)
    book = sim.fleet.volumes
    volume = book.new("slow", 10)  # created, its job not done: pending, no directory yet
    looked = asyncio.Event()
    original = book.describe
    calls = 0

    def counting(**filters: Any) -> list[SimVolume]:
        nonlocal calls
        calls += 1
        if calls >= 2:  # the first look, then a poll of the wait
            looked.set()
        return original(**filters)

    book.describe = counting  # type: ignore[method-assign]
    attaching = asyncio.create_task(provider.attach_volume(volume.volume_id, iid))
    await asyncio.wait_for(looked.wait(), 10)
    assert not attaching.done()
    make_volume_dir(volume)
    volume.set_status("available")
    attached = await asyncio.wait_for(attaching, 10)
    assert attached.instance_id == iid and attached.status == "in-use"
