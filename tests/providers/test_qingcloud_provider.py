"""QingCloudProvider driving a real in-process simulator: VMs, userdata, daemons, errors."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from pathlib import Path

import pytest

from pitrix.providers.base import InstanceSpec, Provider, ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.providers.registry import load_provider
from simulator.cloud import Simulator
from simulator.testing import Beacon, daemon_userdata, pid_alive


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


async def boot_daemon_vm(
    provider: QingCloudProvider, beacon: Beacon, name: str
) -> tuple[str, int, int, str, int]:
    """Run one VM whose userdata starts a daemon; returns (instance id, pid, sid, ip, port)."""
    [created] = await provider.run_instances(
        [InstanceSpec(name=name, image="pitrix-metadata", userdata=daemon_userdata(beacon.port))]
    )
    [running] = await provider.wait_running([created.instance_id], timeout=10)
    iid, pid, sid, address = (await beacon.next()).split()
    assert iid == created.instance_id
    ip, port = address.rsplit(":", 1)
    assert ip == running.private_ip
    return iid, int(pid), int(sid), ip, int(port)


async def test_it_is_the_registered_qingcloud_provider(sim: Simulator) -> None:
    provider = load_provider("qingcloud", sim.runtime())
    try:
        assert isinstance(provider, QingCloudProvider)
        assert isinstance(provider, Provider)
        assert provider.name == "qingcloud"
    finally:
        await provider.close()


def test_from_runtime_names_missing_keys() -> None:
    with pytest.raises(ProviderError, match="missing zone, secret_access_key"):
        QingCloudProvider.from_runtime({"endpoint": "http://127.0.0.1:1", "access_key_id": "AK"})
    with pytest.raises(ProviderError, match="endpoint"):
        QingCloudProvider.from_runtime(
            {"endpoint": "ftp://x", "zone": "z", "access_key_id": "a", "secret_access_key": "s"}
        )
    with pytest.raises(ProviderError, match="timeout"):
        QingCloudProvider.from_runtime(
            {
                "endpoint": "http://x",
                "zone": "z",
                "access_key_id": "a",
                "secret_access_key": "s",
                "timeout": -1,
            }
        )


async def test_run_boots_vm_runs_userdata_and_its_daemon(
    sim: Simulator, provider: QingCloudProvider, beacon: Beacon
) -> None:
    [created] = await provider.run_instances(
        [InstanceSpec(name="cl-1-n1", image="pitrix-metadata", userdata=daemon_userdata(beacon.port))]
    )
    assert created.status == "pending" and created.instance_id.startswith("i-")
    [running] = await provider.wait_running([created.instance_id], timeout=10)
    assert running.status == "running"
    assert ipaddress.IPv4Address(running.private_ip) in sim.pool.network
    assert running.private_ip.endswith(".2")  # the first VM gets .2
    assert running.ssh_port == 2222
    iid, pid, sid, address = (await beacon.next()).split()
    assert iid == created.instance_id and address == f"{running.private_ip}:8000"
    assert int(pid) == int(sid)  # it called setsid: not in the userdata's session any more

    root = sim.state_dir / "vms" / iid / "root"
    assert (root / "README.md").is_file()  # the image was copied in
    assert (root / "etc/rc.local").read_text().startswith("#!/bin/sh")  # sent as exec
    assert (root / "var/log/boots").read_text() == f"booted {iid} {root}\n"
    env = environ_of(int(pid))
    assert env["PITRIX_VM_ID"] == iid and env["PITRIX_VM_IP"] == running.private_ip
    assert env["PITRIX_VM_ROOT"] == str(root) and env["HOME"] == str(root / "root")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert os.readlink(f"/proc/{pid}/cwd") == str(root)

    # The daemon really listens on the VM's own address.
    reader, writer = await asyncio.wait_for(asyncio.open_connection(running.private_ip, 8000), 5)
    assert await asyncio.wait_for(reader.read(), 5) == iid.encode()
    writer.close()
    log = await asyncio.to_thread((root / "var/log/userdata.log").read_text)
    assert "started" in log


async def test_terminate_kills_setsid_daemon_and_removes_root(
    sim: Simulator, provider: QingCloudProvider, beacon: Beacon
) -> None:
    iid, pid, _, ip, _ = await boot_daemon_vm(provider, beacon, "cl-2-n1")
    home = sim.state_dir / "vms" / iid
    assert pid_alive(pid) and home.is_dir()
    await provider.terminate_instances([iid])
    assert not pid_alive(pid)
    assert not home.exists()
    [entry] = [e for e in sim.ledger() if e["instance_id"] == iid]
    assert entry["status"] == "terminated" and entry["terminated"] and entry["ip"] == ip
    assert await provider.describe_instances(instance_ids=[iid]) == []
    assert sim.pool.in_use() == 0
    # Repeating the step after a crash must not fail.
    await provider.terminate_instances([iid, "i-neverwas"])
    with pytest.raises(ProviderError, match="terminated"):
        await provider.wait_running([iid], timeout=1)


async def test_stop_keeps_disk_and_start_runs_userdata_again(
    sim: Simulator, provider: QingCloudProvider, beacon: Beacon
) -> None:
    iid, pid, _, ip, port = await boot_daemon_vm(provider, beacon, "cl-3-n1")
    root = sim.state_dir / "vms" / iid / "root"
    (root / "data").write_text("kept")
    await provider.stop_instances([iid])
    assert not pid_alive(pid)
    [stopped] = await provider.describe_instances(instance_ids=[iid])
    assert stopped.status == "stopped" and stopped.private_ip == ip
    assert (root / "data").read_text() == "kept"
    with pytest.raises(ProviderError, match="stopped"):
        await provider.wait_running([iid], timeout=1)
    await provider.stop_instances([iid])  # already stopped: nothing to do

    await provider.start_instances([iid])
    [running] = await provider.wait_running([iid], timeout=10)
    assert running.private_ip == ip
    again, new_pid, _, address = (await beacon.next()).split()
    assert again == iid and address == f"{ip}:{port}" and int(new_pid) != pid
    assert (root / "var/log/boots").read_text().count("booted") == 2
    await provider.start_instances([iid])  # already running: nothing to do


async def test_describe_by_id_prefix_and_status(sim: Simulator, provider: QingCloudProvider) -> None:
    names = ["c7-web-1", "c7-web-2", "c7-lb-1", "xc7-web-1", "c8-web-1"]
    created = await provider.run_instances([InstanceSpec(name=n, image="pitrix-metadata") for n in names])
    ids = {i.name: i.instance_id for i in created}
    await provider.wait_running(list(ids.values()), timeout=10)

    by_prefix = await provider.describe_instances(name_prefix="c7-")
    assert sorted(i.name for i in by_prefix) == ["c7-lb-1", "c7-web-1", "c7-web-2"]  # not xc7-web-1
    assert [i.name for i in await provider.describe_instances(name_prefix="c7-web-")] == sorted(
        ["c7-web-1", "c7-web-2"], reverse=True
    )
    by_id = await provider.describe_instances(instance_ids=[ids["c8-web-1"], ids["c7-lb-1"]])
    assert sorted(i.name for i in by_id) == ["c7-lb-1", "c8-web-1"]
    assert await provider.describe_instances(instance_ids=[]) == []
    assert len(await provider.describe_instances()) == 5

    await provider.stop_instances([ids["c7-web-1"]])
    await provider.terminate_instances([ids["c7-web-2"]])
    statuses = {i.name: i.status for i in await provider.describe_instances(name_prefix="c7-")}
    assert statuses == {"c7-web-1": "stopped", "c7-lb-1": "running"}


async def test_describe_follows_pages(sim: Simulator, provider: QingCloudProvider) -> None:
    specs = [InstanceSpec(name=f"pg-{n:02d}", image="pitrix-metadata") for n in range(12)]
    created = await provider.run_instances(specs)
    provider.page_size = 5
    found = await provider.describe_instances(name_prefix="pg-")
    assert sorted(i.name for i in found) == [s.name for s in specs]
    by_id = await provider.describe_instances(instance_ids=[i.instance_id for i in created])
    assert len(by_id) == 12


async def test_bad_signature_is_a_clear_error(sim: Simulator) -> None:
    runtime = {**sim.runtime(), "secret_access_key": "not-the-secret"}
    provider = QingCloudProvider.from_runtime(runtime)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.describe_instances()
        assert caught.value.code == "1200" and not caught.value.transient
        assert "signature not matched" in str(caught.value)
    finally:
        await provider.close()


async def test_unknown_key_and_wrong_zone_are_refused(sim: Simulator) -> None:
    for change, text in (({"access_key_id": "NOSUCHKEY"}, "NOSUCHKEY"), ({"zone": "pek3"}, "zone")):
        provider = QingCloudProvider.from_runtime({**sim.runtime(), **change})
        try:
            with pytest.raises(ProviderError, match=text):
                await provider.describe_instances()
        finally:
            await provider.close()


async def test_unknown_image_is_a_clear_error(sim: Simulator, provider: QingCloudProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.run_instances([InstanceSpec(name="x-1", image="no-such-image")])
    assert caught.value.code == "2100" and "no-such-image" in str(caught.value)
    assert sim.ledger() == [] and sim.pool.in_use() == 0


async def test_throttling_is_retried(sim: Simulator, provider: QingCloudProvider) -> None:
    sim.faults.inject("DescribeInstances", 1500, times=2)
    assert await provider.describe_instances() == []
    sim.faults.inject("DescribeInstances", 5100, times=50)
    with pytest.raises(ProviderError) as caught:
        await provider.describe_instances()
    assert caught.value.code == "5100" and caught.value.transient
    assert caught.value.exhausted  # retried here: the step executor will not retry it again
    sim.faults.clear()


async def test_run_is_not_repeated_after_an_ambiguous_failure(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    sim.faults.inject("RunInstances", 5000, times=1)
    with pytest.raises(ProviderError) as caught:
        await provider.run_instances([InstanceSpec(name="r-1", image="pitrix-metadata")])
    assert caught.value.code == "5000" and caught.value.transient
    assert not caught.value.exhausted  # not repeated blindly: left to the step, which looks first
    sim.faults.inject("RunInstances", 1500, times=1)  # throttled: certainly not done, so retried
    [created] = await provider.run_instances([InstanceSpec(name="r-1", image="pitrix-metadata")])
    assert [e["instance_id"] for e in sim.ledger()] == [created.instance_id]


async def test_partial_run_reports_error_after_all_answers(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    specs = [InstanceSpec(name="p-1", image="pitrix-metadata"), InstanceSpec(name="p-2", image="nope")]
    with pytest.raises(ProviderError, match="nope"):
        await provider.run_instances(specs)
    assert [e["name"] for e in sim.ledger()] == ["p-1"]  # found again by name, as the runtime does


async def test_unreachable_endpoint_is_retryable(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = QingCloudProvider(f"http://127.0.0.1:{port}", "sim1", "AK", "SK", timeout=1.0)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.describe_instances()
        assert caught.value.code == "connect" and caught.value.transient
    finally:
        await provider.close()


async def test_wait_running_times_out_and_rejects_unknown(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    with pytest.raises(ProviderError, match="missing"):
        await provider.wait_running(["i-unknown1"], timeout=1)
    assert await provider.wait_running([], timeout=1) == []


async def test_unknown_job_is_an_error_not_a_hang(sim: Simulator, provider: QingCloudProvider) -> None:
    with pytest.raises(ProviderError, match=r"j-nosuchjob.*not found"):
        await provider.wait_jobs(["j-nosuchjob"], timeout=5)
    await provider.wait_jobs([], timeout=1)


async def test_run_nothing_calls_nothing(sim: Simulator, provider: QingCloudProvider) -> None:
    assert await provider.run_instances([]) == []
    await provider.terminate_instances([])
    await provider.stop_instances([])
    await provider.start_instances([])
    assert sim.ledger() == [] and sim.fleet.jobs.all() == []


async def test_names_with_spaces_and_unicode_survive_signing(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    names = ["集群 a+b/1", "集群 a+b/2", "集群 a-b/3"]
    created = await provider.run_instances([InstanceSpec(name=n, image="pitrix-metadata") for n in names])
    await provider.wait_running([i.instance_id for i in created], timeout=10)
    found = await provider.describe_instances(name_prefix="集群 a+b/")
    assert sorted(i.name for i in found) == names[:2]


async def test_many_specs_are_created_with_bounded_concurrency(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    specs = [InstanceSpec(name=f"bulk-{n:02d}", image="pitrix-metadata") for n in range(30)]
    created = await provider.run_instances(specs)
    assert [i.name for i in created] == [s.name for s in specs]
    running = await provider.wait_running([i.instance_id for i in created], timeout=20)
    assert len({i.private_ip for i in running}) == 30
