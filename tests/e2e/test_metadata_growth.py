"""A ready metadata cluster of one grows to three when its runtime's metadata_size is raised:
member 0's etcd moves to the peers' TLS with its data, then members m1 and m2 join one at a time.
pitrixd's own metadata monitor grows it (resuming the first member's job, whose steps the test ran
twice each: the second finds the first's work done). The env written before is still served, one
rolled out during the growth and one after reach the node, the roster follows, a growth run again
makes nothing, and a cluster deleted mid-growth leaves no VM."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cloud import Cloud, demo_app
from e2e_daemons import live, runtime_definition
from test_lifecycle import expect
from test_update_env import greetings

from pitrix.api.app import metadata_view
from pitrix.metad import roster
from pitrix.metad.client import FailoverManagementClient
from pitrix.runtime import metadata_grow
from pitrix.runtime.keys import metadata_key
from pitrix.runtime.metadata import LOCK_TTL, MetadataClusters
from pitrix.runtime.metadata_monitor import MetadataMonitor
from pitrix.runtime.records import MetadataCluster
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.store import Lock
from pitrix.store.embedded import BINARY_VARIABLE

pytestmark = pytest.mark.e2e

SYSTEM_ETCD = Path("/usr/bin/etcd")


@pytest.fixture
def etcd34(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Debian's etcd 3.4 for the members (inherited by the simulator, so by its VMs)."""
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    monkeypatch.setenv(BINARY_VARIABLE, str(SYSTEM_ETCD))
    yield


@pytest.fixture
def recovery_policy() -> RecoveryPolicy:
    """pitrixd's own watch of the metadata members, looking often: it grows the cluster."""
    return RecoveryPolicy(enabled=False, metadata_interval=0.5)


async def grown_to(clusters: MetadataClusters, members: int) -> MetadataCluster:
    """The record once it has ``members`` members besides member 0 and says nothing is wrong,
    followed through its etcd watch."""
    key = metadata_key("o", "sim")

    def done(raw: bytes) -> MetadataCluster | None:
        record = MetadataCluster.opened(raw, clusters.sealer)
        return record if len(record.members) == members and not record.condition else None

    kv = await clusters.store.get(key)
    assert kv is not None
    if (record := done(kv.value)) is not None:
        return record
    async with asyncio.timeout(120):
        async for batch in clusters.store.watch_prefix(key, kv.mod_revision + 1):
            changes = [(k.key, k.value) for k in batch.state] or [(e.key, e.value) for e in batch.events]
            for changed, value in changes:
                if changed == key and value and (record := done(value)) is not None:
                    return record
    raise AssertionError("the watch of the metadata record ended")


async def test_a_metadata_cluster_of_one_grows_to_three(etcd34: None, cloud: Cloud) -> None:
    service, http = cloud.service, cloud.http
    clusters = service.metadata
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=demo_app(), counts={"web": 1, "lb": 0}
    )
    cid = cluster.id
    await expect(service, cid, "active")
    await service.update_env(cid, {"web": {"greeting": "before"}})
    await expect(service, cid, "active")
    record = await clusters.get("o", "sim")
    assert record is not None and not record.members
    monitor = MetadataMonitor(clusters, RecoveryPolicy())
    assert await monitor.look("o", "sim", {}) is True  # size 1: nothing to do
    assert await metadata_grow.load(clusters, "o", "sim") is None

    # The size raised while the test holds the metadata cluster's lock: pitrixd's monitor, which
    # would grow it, waits for the lock while the test runs m1's steps itself.
    lock = Lock(service.store, "metadata/o/sim", ttl=LOCK_TTL)
    await lock.acquire(timeout=30)
    try:
        await steps_of_m1(cloud, record, cid)
    finally:
        await lock.release()

    # pitrixd's monitor resumes the growth under way (m1's last step), then adds m2 whole; an env
    # rollout meanwhile reaches the node all the same.
    await service.update_env(cid, {"web": {"greeting": "during"}})
    await expect(service, cid, "active")
    assert await greetings(http, service, cid) == {"web-1": "during"}
    grown = await grown_to(clusters, 2)
    assert [m.name for m in grown.members] == [f"{record.name}-m1", f"{record.name}-m2"]
    assert (grown.ip, grown.instance_id) == (record.ip, record.instance_id)
    assert await metadata_grow.load(clusters, "o", "sim") is None
    # pitrixd's client for it fails over between the three now (a replica that did not grow it too).
    assert isinstance(clusters.client(grown), FailoverManagementClient)
    assert len(clusters.client(grown).base_urls) == 3

    # Three started etcd members, as member 2's metad sees them; the value served there too.
    env_key = f"/clusters/{cid}/env/web/greeting"
    last = grown.model_copy(update={"ip": grown.members[1].ip, "members": []})
    listed = await clusters.client(last).etcd_members()
    assert sorted(m["name"] for m in listed["members"]) == ["m0", "m1", "m2"]
    assert all(m["started"] for m in listed["members"])
    assert await clusters.client(last).get_data(env_key) == "during"

    # A new value reaches the node through the grown cluster; the roster names every member.
    await service.update_env(cid, {"web": {"greeting": "after"}})
    await expect(service, cid, "active")
    assert await greetings(http, service, cid) == {"web-1": "after"}
    assert await clusters.client(last).get_data(env_key) == "after"
    async with asyncio.timeout(30), service.roster.settled:  # the record changed seconds ago
        await service.roster.settled.wait_for(lambda: not service.roster.pending())
    assert roster.published(await clusters.client(last).get_data(roster.KEY)) == grown.instance_urls

    # Run again: nothing to do, nothing made.
    grow = metadata_grow.MetadataGrow(clusters, "o", "sim")
    before = {vm["name"] for vm in live(await cloud.ledger())}
    assert await metadata_grow.begin(clusters, "o", "sim", 3) is None
    assert (await metadata_grow.grow(clusters, "o", "sim", 3)).members == grown.members
    assert "already" in await grow.peer_tls()
    assert await monitor.look("o", "sim", {}) is True
    assert {vm["name"] for vm in live(await cloud.ledger())} == before

    # Deleting the cluster mid-growth (to five: m3's VM made, not yet a member) removes every VM,
    # the joining one too, and the job. pitrixd's own watch stopped first: it would finish it.
    await service.monitor.members.stop()
    job = await metadata_grow.begin(clusters, "o", "sim", 5)
    assert job is not None and job.vm_name == f"{record.name}-m3"
    assert (await grow.plan().steps[1].run()).startswith("made")
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    names = {grown.name, job.vm_name, *(m.name for m in grown.members)}
    assert not names & {vm["name"] for vm in live(await cloud.ledger())}
    assert await metadata_grow.load(clusters, "o", "sim") is None


async def steps_of_m1(cloud: Cloud, record: MetadataCluster, cid: str) -> None:
    """The growth begun and its first member's steps run twice each (the second finds the first's
    work done), all but its last; the env written before is still served."""
    service, clusters = cloud.service, cloud.service.metadata
    await service.put_runtime({**runtime_definition(cloud.sim), "metadata_size": 3})
    job = await metadata_grow.begin(clusters, "o", "sim", 3)
    assert job is not None and (job.slot, job.vm_name, job.target) == (1, f"{record.name}-m1", 3)
    assert (await metadata_grow.begin(clusters, "o", "sim", 3)) == job  # one member at a time
    growing = await clusters.record("o", "sim")
    assert growing is not None and growing.condition == "metadata cluster growing 1 → 3"
    cluster = await service.get_cluster(cid)
    view = await metadata_view(service, cluster)  # what `pitrix show` prints
    assert view is not None and view["condition"] == "metadata cluster growing 1 → 3"

    # Member m1, each step run twice: the second finds the first's work done.
    # While member 0's etcd restarts on the peers' TLS, pitrixd's writes through it wait, not fail.
    grow = metadata_grow.MetadataGrow(clusters, "o", "sim")
    steps = grow.plan().steps
    writer = clusters.client(record)
    stop = asyncio.Event()

    async def write_on() -> int:
        written = 0
        while not stop.is_set():
            written += 1
            await writer.put_data(f"/clusters/{cid}/probe", str(written))
            await asyncio.sleep(0.02)  # a steady writer, not a flood
        return written

    writes = asyncio.create_task(write_on())
    try:
        ran: dict[str, tuple[str, ...]] = {"peer-tls": (await steps[0].run(),)}
    finally:
        stop.set()
    written = await writes
    assert await writer.get_data(f"/clusters/{cid}/probe") == str(written)
    ran["peer-tls"] += (await steps[0].run(),)
    for step in steps[1:-1]:
        ran[step.name] = (await step.run(), await step.run())
    assert "its etcd restarted" in ran["peer-tls"][0] and "already" in ran["peer-tls"][1]
    assert ran["run-instance"][0].startswith("made") and ran["run-instance"][1].startswith("found")
    assert ran["member-add"][0] == ran["member-add"][1]
    assert ran["bootstrap-peer"][1] == "handed over already"
    # The value written before the growth, through member 0 whose etcd restarted under it.
    env_key = f"/clusters/{cid}/env/web/greeting"
    assert await clusters.client(record).get_data(env_key) == "before"
