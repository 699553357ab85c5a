"""The Redis example (examples/redis) on the simulator, checked from the host as Redis clients see it.

Real redis-server and redis-sentinel processes run in the simulated VMs (Debian's packages, from
scripts/system-deps.sh). One cluster goes through the package's whole life: create (the first node
primary, replication, the password enforced), a crashed replica replaced by ``recover`` that
resyncs, a scale-out whose hook makes the Sentinels forget the crashed replica, a ``failover``
while a client writes through Sentinel (no acknowledged write lost), stop/start with the data kept,
a parameter change applied to the running servers, and a resize (memory and volume) with the data
kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_cloud import Cloud, simulated_cloud
from redis_client import Resp, RespError, command, eventually, info
from test_lifecycle import expect

from pitrix.runtime.records import Node
from pitrix.store import Store
from simulator.testing import random_network

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not all(shutil.which(p) for p in ("redis-server", "redis-sentinel", "redis-cli")),
        reason="Debian's redis-server and redis-sentinel are not installed (scripts/system-deps.sh)",
    ),
]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "redis"
PASSWORD = "pitrix-Redis.pw1"
PORT, SENTINEL_PORT, MASTER = 6379, 26379, "mymaster"
SYNC_TIMEOUT = 60.0


@pytest.fixture
async def cloud(store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    """The simulator with the example's image directory (the ``redis`` image) besides its own."""
    async with simulated_cloud(store, tmp_path, "--images-dir", str(EXAMPLE / "images")) as simulated:
        yield simulated


def redis_app() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((EXAMPLE / "app.yaml").read_text())
    spec["roles"][0]["env"]["requirepass"]["default"] = PASSWORD
    return spec


async def redis_nodes(cloud: Cloud, cid: str) -> dict[str, Node]:
    return {n.node_id: n for n in await cloud.service.nodes(cid) if n.role == "redis"}


async def replication(ip: str) -> dict[str, str]:
    answer = await command(ip, PORT, PASSWORD, "INFO", "replication")
    assert isinstance(answer, bytes)
    return info(answer)


async def sentinel_primary(ip: str) -> str:
    answer = await command(ip, SENTINEL_PORT, PASSWORD, "SENTINEL", "get-master-addr-by-name", MASTER)
    assert isinstance(answer, list) and answer, answer
    return str(answer[0].decode())


async def sentinels_agree(ips: list[str], primary: str) -> None:
    """Every Sentinel names ``primary`` (they learn of a failover from each other within seconds)."""

    async def agreed() -> bool | None:
        seen = [await sentinel_primary(ip) for ip in ips]
        return True if set(seen) == {primary} else None

    await eventually(agreed, SYNC_TIMEOUT, f"Sentinels on {ips} naming {primary}")


async def brisk_sentinels(ips: list[str]) -> None:
    """Each Sentinel asks the Redis servers for INFO every second instead of every 10 s (``SENTINEL
    DEBUG INFO-PERIOD``, Redis 7's setting of Sentinel's timers for tests). After a ``SENTINEL
    RESET`` a Sentinel finds the replicas again at its next INFO, and the ``scale_out`` hook waits
    for that: up to 10 s per hook, on the package's own timer, not what this test checks. Sentinel
    forgets it at a restart, so the test sets it on the Sentinels that run the next hook (a
    Sentinel also learns sooner that a node it knew as primary came back as one)."""
    for ip in ips:
        assert await command(ip, SENTINEL_PORT, PASSWORD, "SENTINEL", "DEBUG", "INFO-PERIOD", "1000") == "OK"


async def in_sync(primary: str, replicas: list[str]) -> None:
    """Each replica follows ``primary``, its link up and no sync running."""

    async def synced() -> bool | None:
        for ip in replicas:
            state = await replication(ip)
            if (
                state.get("role") != "slave"
                or state.get("master_host") != primary
                or state.get("master_link_status") != "up"
                or state.get("master_sync_in_progress") != "0"
            ):
                return None
        return True

    await eventually(synced, SYNC_TIMEOUT, f"replicas {replicas} in sync with {primary}")


async def write_keys(primary: str, keys: list[str], replicas: int) -> None:
    """SET each key on the primary, then WAIT until ``replicas`` replicas acknowledged them all."""
    client = await Resp.connect(primary, PORT, PASSWORD)
    try:
        for key in keys:
            assert await client.call("SET", key, key) == "OK"
        assert await client.call("WAIT", replicas, 10_000, timeout=15) == replicas
    finally:
        await client.close()


async def none_left(directory: Path) -> None:
    """Until no live process names a file under ``directory`` (a SIGKILLed one takes a moment)."""

    async def gone() -> bool | None:
        return True if not processes_under(directory) else None

    await eventually(gone, 15, f"processes of {directory} gone")


async def config_get(ip: str, name: str) -> str:
    answer = await command(ip, PORT, PASSWORD, "CONFIG", "GET", name)
    assert isinstance(answer, list) and len(answer) == 2, answer
    return str(answer[1].decode())


async def count_present(ip: str, keys: list[str]) -> int:
    present = 0
    for start in range(0, len(keys), 500):
        answer = await command(ip, PORT, PASSWORD, "EXISTS", *keys[start : start + 500])
        assert isinstance(answer, int)
        present += answer
    return present


def processes_under(directory: Path) -> list[str]:
    """Command lines of live processes naming a file under ``directory`` (the VMs' roots)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(str(directory).encode() in arg for arg in argv):
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


class Writer:
    """A client writing numbered keys to whichever node Sentinel names primary, counting acks."""

    def __init__(self, sentinels: list[str]) -> None:
        self.sentinels = sentinels
        self.acked: list[str] = []
        self.by_primary: Counter[str] = Counter()
        self.errors = 0
        self.stop = asyncio.Event()
        self.progress = asyncio.Condition()

    async def acknowledged(self, primary: str, count: int, timeout: float) -> None:
        """Until ``primary`` has acknowledged ``count`` of this client's writes."""
        async with self.progress:
            await asyncio.wait_for(self.progress.wait_for(lambda: self.by_primary[primary] >= count), timeout)

    async def discover(self) -> str:
        for ip in self.sentinels:
            try:
                return await sentinel_primary(ip)
            except (OSError, RespError, TimeoutError, asyncio.IncompleteReadError):
                continue
        raise OSError("no Sentinel answers")

    async def run(self) -> None:
        client: Resp | None = None
        number = 0
        try:
            while not self.stop.is_set():
                key = f"w:{number}"
                number += 1
                try:
                    if client is None:
                        primary = await self.discover()
                        client = await Resp.connect(primary, PORT, PASSWORD)
                    if await client.call("SET", key, key, timeout=3) == "OK":
                        self.acked.append(key)
                        self.by_primary[primary] += 1
                        async with self.progress:
                            self.progress.notify_all()
                except (OSError, RespError, TimeoutError, asyncio.IncompleteReadError):
                    self.errors += 1  # not acknowledged: the key may or may not exist
                    if client is not None:
                        await client.close()
                    client = None
                # a steady trickle of writes, not a flood, on a shared 2-core machine
                await asyncio.sleep(0.01)
        finally:
            if client is not None:
                await client.close()


async def test_redis_package_lifecycle(cloud: Cloud) -> None:
    service = cloud.service
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=redis_app())
    cid = cluster.id
    await expect(service, cid, "active")
    nodes = await redis_nodes(cloud, cid)
    assert sorted(nodes) == ["redis-1", "redis-2", "redis-3"]
    ips = {node_id: node.ip for node_id, node in nodes.items()}

    # The first node is the primary; the others replicate it; every Sentinel agrees.
    primary = ips["redis-1"]
    assert (await replication(primary))["role"] == "master"
    await in_sync(primary, [ips["redis-2"], ips["redis-3"]])
    await sentinels_agree(list(ips.values()), primary)
    seed = [f"seed:{i}" for i in range(200)]
    await write_keys(primary, seed, replicas=2)
    for node_id in ("redis-2", "redis-3"):
        assert await count_present(ips[node_id], seed) == len(seed), node_id

    # requirepass is enforced, on Redis and on Sentinel.
    for port in (PORT, SENTINEL_PORT):
        with pytest.raises(RespError, match="NOAUTH"):
            await command(primary, port, None, "PING")
        with pytest.raises(RespError, match=r"WRONGPASS|invalid password"):
            await command(primary, port, "not-the-password", "PING")

    # A replica's VM crashes; recover replaces it and the new instance resyncs from the primary.
    await brisk_sentinels([ips["redis-1"], ips["redis-2"]])  # the nodes whose scale_out hook runs
    crashed = nodes["redis-3"]
    assert cloud.crash_vm(crashed.instance_id)
    crashed_root = cloud.workdir / "sim" / "vms" / crashed.instance_id
    await none_left(crashed_root)  # Redis and Sentinel die with their VM
    await service.recover(cid, nodes=["redis-3"])
    await expect(service, cid, "active")
    nodes = await redis_nodes(cloud, cid)
    assert nodes["redis-3"].instance_id != crashed.instance_id
    ips = {node_id: node.ip for node_id, node in nodes.items()}
    await in_sync(primary, [ips["redis-2"], ips["redis-3"]])
    assert await count_present(ips["redis-3"], seed) == len(seed)
    assert await sentinel_primary(ips["redis-3"]) == primary

    # Resize: more memory and a bigger volume, node by node (stop, resize, grow, start, healthy),
    # the primary last (the package's ordering: one primary stop, not one per failover); the guest
    # sees its new size, every key written before is still on every node, and the Sentinels agree
    # on a primary (the primary's stop may have moved it).
    job = await service.act(cid, "resize", {"roles": {"redis": {"memory": 2048, "volume_size": 20}}})
    resized = await expect(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "successful"
    steps = sorted(await service.job_steps(cid, job.id), key=lambda s: s.name)
    batches = [s.detail for s in steps if s.name.startswith("resize:redis:batch-")]
    assert len(batches) == 3 and batches[-1].startswith("redis-1:"), batches
    await brisk_sentinels(list(ips.values()))  # each restarted by the resize
    assert resized.resources["redis"].memory == 2048 and resized.resources["redis"].volume_size == 20
    for node in (await redis_nodes(cloud, cid)).values():
        assert f"MemTotal:       {2048 * 1024} kB" in cloud.vm_file(node.instance_id, "proc/meminfo")
        assert cloud.vm_file(node.instance_id, "sys/block/vdb/size").strip() == str(20 * 1024**3 // 512)
    primary = await sentinel_primary(ips["redis-1"])
    await sentinels_agree(list(ips.values()), primary)
    await in_sync(primary, [ip for ip in ips.values() if ip != primary])
    for ip in ips.values():
        assert await count_present(ip, seed) == len(seed), ip

    # Scale out to 4: the new node joins the primary Sentinel names; the scale_out hook on the three
    # that were there resets their Sentinels, which forget the crashed replica's address.
    await service.scale(cid, "redis", 4)
    await expect(service, cid, "active")
    nodes = await redis_nodes(cloud, cid)
    ips = {node_id: node.ip for node_id, node in nodes.items()}
    replicas = sorted(ip for ip in ips.values() if ip != primary)
    assert len(replicas) == 3
    await in_sync(primary, replicas)
    assert await count_present(ips["redis-4"], seed) == len(seed)
    added = nodes["redis-4"].instance_id  # made at the size the resize recorded for the role
    assert f"MemTotal:       {2048 * 1024} kB" in cloud.vm_file(added, "proc/meminfo")
    for node_id, ip in ips.items():
        known = await command(ip, SENTINEL_PORT, PASSWORD, "SENTINEL", "REPLICAS", MASTER)
        assert isinstance(known, list)
        assert sorted(dict(zip(r[::2], r[1::2], strict=True))[b"ip"].decode() for r in known) == replicas, (
            node_id
        )

    # failover while a client writes through Sentinel: a replica is promoted, no acked write lost.
    writer = Writer(list(ips.values()))
    writing = asyncio.create_task(writer.run())
    try:
        await writer.acknowledged(primary, 20, 30)
        job = await service.act(cid, "service", {"name": "failover", "params": {"TIMEOUT": 30}})
        await expect(service, cid, "active")
        done = await service.get_job(cid, job.id)
        assert done.status == "successful", done.error
        assert list(done.results) == ["redis-1"]  # nodes_to_execute_on: 1
        result = done.results["redis-1"]
        new_primary = await sentinel_primary(ips["redis-2"])
        assert new_primary != primary and new_primary in ips.values()
        assert f'"new_primary": "{new_primary}"' in result.get("output_tail", ""), result
        await writer.acknowledged(new_primary, 20, 30)
    finally:
        writer.stop.set()
        await writing
    assert (await replication(new_primary))["role"] == "master"
    others = [ip for ip in ips.values() if ip != new_primary]
    await in_sync(new_primary, others)
    await sentinels_agree(list(ips.values()), new_primary)
    assert await count_present(new_primary, writer.acked) == len(writer.acked), writer.errors
    kept = seed + writer.acked

    # Stop and start: the data is kept, the primary is still the one the failover chose.
    await service.stop_cluster(cid)
    await expect(service, cid, "stopped")
    await service.start_cluster(cid)
    await expect(service, cid, "active")
    assert {n.node_id: n.ip for n in (await redis_nodes(cloud, cid)).values()} == ips
    await sentinels_agree(list(ips.values()), new_primary)
    await in_sync(new_primary, others)
    for ip in ips.values():
        assert await count_present(ip, kept) == len(kept), ip

    # A parameter change reaches the running servers: the agent renders params.conf node by node
    # and its reload_cmd applies it with CONFIG SET, no restart.
    assert await config_get(new_primary, "maxmemory") == "0"
    await service.update_env(cid, {"redis": {"maxmemory": "64mb", "maxmemory_policy": "allkeys-lru"}})
    await expect(service, cid, "active")
    for ip in ips.values():
        assert await config_get(ip, "maxmemory") == str(64 * 1024 * 1024), ip
        assert await config_get(ip, "maxmemory-policy") == "allkeys-lru", ip
    assert (await replication(new_primary))["role"] == "master"

    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    assert await cloud.live_names() == []
    await none_left(cloud.workdir / "sim" / "vms")


CTL = EXAMPLE / "images" / "redis" / "opt" / "redis" / "bin" / "redis-ctl"


def node_root(root: Path, ip: str, password: str) -> None:
    """A VM root as the agent leaves it for one node alone: node.env and peers rendered."""
    etc = root / "etc" / "redis"
    etc.mkdir(parents=True)
    quoted = password.replace("'", "'\"'\"'")
    (etc / "node.env").write_text(f"ip='{ip}'\nsid='1'\nnode_id='redis-1'\npassword='{quoted}'\n")
    (etc / "peers").write_text(f"1 {ip} redis-1\n\n")
    (etc / "params.conf").write_text("maxmemory 0\nappendonly yes\n")


async def ctl(root: Path, verb: str) -> tuple[int, str]:
    """``redis-ctl VERB`` as the agent runs it: from the VM root, PITRIX_VM_ROOT set."""
    process = await asyncio.create_subprocess_exec(
        str(CTL),
        verb,
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PITRIX_VM_ROOT": str(root)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_redis_ctl_on_one_node_keeps_data_across_stop_and_destroy_removes_it(tmp_path: Path) -> None:
    """The services a cluster delete runs (stop, destroy), on one node's root, with no cluster."""
    ip = str(ipaddress.ip_network(random_network())[2])
    node_root(tmp_path, ip, PASSWORD)
    pidfiles = [tmp_path / "var" / "run" / "redis" / f"{p}.pid" for p in ("redis", "sentinel")]
    try:
        assert (await ctl(tmp_path, "init"))[0] == 0
        status, output = await ctl(tmp_path, "start")
        assert (status, output.strip()) == (0, "redis-ctl: started redis-1 as the primary"), output
        assert await ctl(tmp_path, "check") == (0, "")
        assert await ctl(tmp_path, "order") == (0, "redis-1\n")  # the primary (itself) last
        assert await command(ip, PORT, PASSWORD, "SET", "kept", "yes") == "OK"
        assert (await ctl(tmp_path, "stop"))[0] == 0
        assert (await ctl(tmp_path, "check"))[0] == 1
        await none_left(tmp_path)
        assert (await ctl(tmp_path, "start"))[0] == 0  # the sentinel.conf it wrote is kept and read
        assert await command(ip, PORT, PASSWORD, "GET", "kept") == b"yes"
        status, output = await ctl(tmp_path, "destroy")
        assert (status, output.strip()) == (0, "redis-ctl: data removed"), output
        await none_left(tmp_path)
        assert not (tmp_path / "data" / "redis").exists() and not (tmp_path / "data" / "sentinel").exists()
    finally:
        for pidfile in pidfiles:  # a failed assertion must not leave servers behind
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.mark.parametrize(
    ("password", "refusal"),
    [("", "is empty"), ("it's", "holds a quote"), ('a"b', "holds a quote"), ("a b", "space")],
)
async def test_redis_ctl_refuses_a_password_it_cannot_write_into_a_config(
    tmp_path: Path, password: str, refusal: str
) -> None:
    """The password goes into redis.conf and sentinel.conf between quotes: what would break them is
    refused before anything is written or started."""
    node_root(tmp_path, "127.77.0.1", password)
    status, output = await ctl(tmp_path, "start")
    assert status == 1, output
    assert refusal in output, output
    assert not (tmp_path / "data" / "redis" / "redis.conf").exists()  # nothing was started
