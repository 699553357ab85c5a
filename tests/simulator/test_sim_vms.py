"""VM mechanics: addresses, process discovery by marker, teardown, leftovers of a crashed simulator."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pitrix.providers.base import InstanceSpec, ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from simulator.cloud import Simulator
from simulator.fleet import RunRequest
from simulator.images import ImageCatalog, ImageNotFound
from simulator.network import AddressPool, NetworkError
from simulator.processes import kill_vm_processes, spawn_script, vm_pids
from simulator.testing import Beacon, daemon_userdata, pid_alive, random_network


def spawn_marked(instance_id: str) -> subprocess.Popen[bytes]:
    """A process that looks like a VM's: it carries the marker and escapes into its own session."""
    env = {"PATH": os.environ["PATH"], "PITRIX_VM_ID": instance_id}
    return subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)


def test_pool_hands_out_from_two_and_never_twice() -> None:
    pool = AddressPool("127.150.7.0/29")  # .2 to .6
    got = [pool.allocate() for _ in range(5)]
    assert got == [f"127.150.7.{n}" for n in range(2, 7)]
    assert pool.gateway == "127.150.7.1"
    with pytest.raises(NetworkError, match="no free address"):
        pool.allocate()
    pool.release("127.150.7.3")
    assert pool.allocate() == "127.150.7.3"
    pool.release("127.150.7.5")
    pool.release("127.150.7.2")
    assert pool.allocate() == "127.150.7.5"  # round robin: the most recently freed comes back last
    assert pool.allocate() == "127.150.7.2"


@pytest.mark.parametrize(
    ("cidr", "text"),
    [
        ("10.0.0.0/16", "127.0.0.0/8"),
        ("127.0.0.0/16", "outside 127.0.0.0/16"),
        ("127.0.0.0/8", "outside 127.0.0.0/16"),
        ("127.100.0.1/16", "not an IPv4 network"),
        ("nonsense", "not an IPv4 network"),
        ("127.100.0.0/31", "too small"),
    ],
)
def test_bad_networks_are_refused(cidr: str, text: str) -> None:
    with pytest.raises(NetworkError, match=text):
        AddressPool(cidr)


def test_simulator_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="host"):
        Simulator(tmp_path, host="0.0.0.0")
    with pytest.raises(ValueError, match="host"):
        Simulator(tmp_path, host="localhost")
    with pytest.raises(ValueError, match="secret_access_key"):
        Simulator(tmp_path, credentials={"access_key_id": "A"})
    with pytest.raises(ValueError, match="network"):
        Simulator(tmp_path, network="192.168.0.0/24")
    sim = Simulator(tmp_path)
    assert len(sim.credentials["access_key_id"]) == 20 and len(sim.credentials["secret_access_key"]) == 40
    with pytest.raises(RuntimeError, match="not started"):
        _ = sim.url


def test_images_are_found_in_extra_dirs_first(tmp_path: Path) -> None:
    (tmp_path / "pitrix-metadata").mkdir()
    (tmp_path / "mine").mkdir()
    catalog = ImageCatalog([tmp_path])
    assert catalog.find("pitrix-metadata") == tmp_path / "pitrix-metadata"
    assert catalog.find("mine") == tmp_path / "mine"
    assert {"mine", "pitrix-metadata"} <= set(catalog.names())
    with pytest.raises(ImageNotFound, match="nothing"):
        catalog.find("nothing")
    with pytest.raises(ImageNotFound, match="valid"):
        catalog.find("../pitrix-metadata")


def test_packaged_metadata_image_has_its_directories() -> None:
    image = ImageCatalog().find("pitrix-metadata")
    for sub in ("etc/pitrix", "var/lib/pitrix-metad", "var/log", "root"):
        assert (image / sub).is_dir(), sub
    assert (image / "README.md").read_text().startswith("# pitrix-metadata")


async def test_marker_match_is_exact_and_kill_reaches_setsid_processes() -> None:
    short, longer = spawn_marked("i-test1abc"), spawn_marked("i-test1abcd")
    try:
        found = vm_pids({"i-test1abc"})
        assert found == {short.pid: "i-test1abc"}
        assert vm_pids({"i-test1abcd"}) == {longer.pid: "i-test1abcd"}
        assert await kill_vm_processes({"i-test1abc"}) == 1
        assert await asyncio.to_thread(short.wait) == -15
        assert pid_alive(longer.pid)
    finally:
        longer.kill()
        longer.wait()
    assert await kill_vm_processes({"i-test1abc", "i-test1abcd"}) == 0


async def test_kill_escalates_to_sigkill() -> None:
    env = {"PATH": os.environ["PATH"], "PITRIX_VM_ID": "i-stubborn1"}
    stubborn = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 1; done",
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert stubborn.stdout is not None
    assert await asyncio.wait_for(stubborn.stdout.readline(), 5) == b"ready\n"  # the trap is set
    await kill_vm_processes({"i-stubborn1"}, grace=0.2)
    assert await asyncio.wait_for(stubborn.wait(), 5) == -9
    assert vm_pids({"i-stubborn1"}) == {}


async def test_stop_terminates_every_vm(tmp_path: Path) -> None:
    beacon = await Beacon().start()
    sim = Simulator(tmp_path / "sim", network=random_network())
    await sim.start()
    provider = QingCloudProvider.from_runtime(sim.runtime())
    try:
        specs = [
            InstanceSpec(name=f"all-{n}", image="pitrix-metadata", userdata=daemon_userdata(beacon.port))
            for n in range(3)
        ]
        created = await provider.run_instances(specs)
        await provider.wait_running([i.instance_id for i in created], timeout=10)
        pids = [int((await beacon.next()).split()[1]) for _ in specs]
        assert all(pid_alive(pid) for pid in pids)
    finally:
        await provider.close()
        await sim.stop()
        await beacon.stop()
    assert not any(pid_alive(pid) for pid in pids)
    assert list((tmp_path / "sim" / "vms").iterdir()) == []
    assert {e["status"] for e in sim.ledger()} == {"terminated"}
    assert vm_pids({i.instance_id for i in created}) == {}


async def test_terminate_during_boot_waits_for_the_boot(sim: Simulator, provider: QingCloudProvider) -> None:
    [created] = await provider.run_instances([InstanceSpec(name="race-1", image="pitrix-metadata")])
    await provider.terminate_instances([created.instance_id])  # answered while still pending
    assert not (sim.state_dir / "vms" / created.instance_id).exists()
    assert sim.ledger()[0]["status"] == "terminated"


async def test_leftovers_of_a_crashed_simulator_are_reaped(tmp_path: Path) -> None:
    state = tmp_path / "sim"
    root = state / "vms" / "i-crashed1" / "root"
    root.mkdir(parents=True)
    orphan = spawn_marked("i-crashed1")
    try:
        sim = Simulator(state, network=random_network())
        await sim.start()
        await sim.stop()
        assert await asyncio.to_thread(orphan.wait) == -15
        assert not (state / "vms" / "i-crashed1").exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


async def test_failed_userdata_still_runs_the_vm(sim: Simulator, provider: QingCloudProvider) -> None:
    # QingCloud's images do not stop booting when userdata fails; the log says why.
    [created] = await provider.run_instances(
        [InstanceSpec(name="bad-ud", image="pitrix-metadata", userdata="echo oops >&2; exit 3\n")]
    )
    await provider.wait_running([created.instance_id], timeout=10)
    vm = sim.fleet.vm(created.instance_id)
    assert vm is not None and await asyncio.wait_for(vm.userdata_finished(), 10) == 3
    log = (vm.root / "var/log/userdata.log").read_text()
    assert log == "oops\n"


async def test_stop_while_vms_are_still_booting_leaves_nothing(tmp_path: Path) -> None:
    beacon = await Beacon().start()
    sim = Simulator(tmp_path / "sim", network=random_network())
    await sim.start()
    provider = QingCloudProvider.from_runtime(sim.runtime())
    try:
        specs = [
            InstanceSpec(name=f"early-{n}", image="pitrix-metadata", userdata=daemon_userdata(beacon.port))
            for n in range(5)
        ]
        created = await provider.run_instances(specs)  # answered at once; boots are under way
    finally:
        await provider.close()
        await sim.stop()
        await beacon.stop()
    assert {e["status"] for e in sim.ledger()} == {"terminated"}
    assert list((tmp_path / "sim" / "vms").iterdir()) == []
    assert vm_pids({i.instance_id for i in created}) == {}
    assert sim.pool.in_use() == 0


async def test_failed_boot_fails_the_job_and_halts_the_vm(tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "fragile" / "etc").mkdir(parents=True)
    sim = Simulator(tmp_path / "sim", network=random_network(), images_dirs=[images])
    await sim.start()
    provider = QingCloudProvider.from_runtime(sim.runtime())
    try:
        [iid], job = sim.fleet.run(RunRequest(image_id="fragile"))
        shutil.rmtree(images / "fragile")  # gone before the boot task gets to copy it
        await asyncio.wait_for(job.finished.wait(), 10)
        assert job.status == "failed" and "failed to boot" in job.error
        with pytest.raises(ProviderError, match="stopped"):
            await provider.wait_running([iid], timeout=5)
        with pytest.raises(ProviderError, match="failed"):
            await provider.wait_jobs([job.job_id], timeout=5)
    finally:
        await provider.close()
        await sim.stop()
    assert sim.ledger()[0]["status"] == "terminated"


async def test_userdata_is_spawned_in_its_root_and_session_with_its_output_logged(tmp_path: Path) -> None:
    root = tmp_path / "vm"
    root.mkdir()
    script = root / "userdata.sh"
    script.write_text(
        'echo "in $(pwd) as $0 sid=$(cut -d" " -f6 /proc/$$/stat)"\n'
        'read line || echo "stdin empty"\n'
        "echo oops >&2\n"
        "exit 3\n"
    )
    log = root / "userdata.log"
    log.write_text("earlier boot\n")
    proc = spawn_script(script, root, {"PATH": os.environ["PATH"]}, log)
    assert await asyncio.wait_for(proc.wait(), 10) == 3 and proc.returncode == 3
    assert log.read_text().splitlines() == [
        "earlier boot",  # appended, as every boot's userdata is
        f"in {root} as {script} sid={proc.pid}",  # its own session: it leads it
        "stdin empty",
        "oops",
    ]
    gone = spawn_script(script, tmp_path / "missing", {"PATH": os.environ["PATH"]}, tmp_path / "gone.log")
    assert await asyncio.wait_for(gone.wait(), 10) == 126  # as a shell answers what it cannot run
