"""examples/etcd-cluster on the simulator: a real etcd 3.4 cluster, judged from the host by etcd itself.

Every VM runs Debian's /usr/bin/etcd from the package's image; membership, leadership and data are
read over etcd's v3 HTTP API at the VMs' addresses (``etcd_http``), never taken from pitrix's word.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from e2e_cloud import Cloud, simulated_cloud
from e2e_daemons import live
from etcd_http import EtcdHttp, Writer, eventually, peer_url
from prometheus_client.parser import text_string_to_metric_families
from test_lifecycle import expect

from pitrix.api.app import create_app
from pitrix.runtime.records import Node
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.store import Store

pytestmark = pytest.mark.e2e

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "etcd-cluster"
# A loaded 2-core machine runs five members beside pitrix: elections sized for it, not for a LAN.
TUNING = {"heartbeat-interval": 100, "election-timeout": 2000}
# The package checks health every 2 s and calls a member unhealthy after 3 failures: the tests check
# every second (each health gate waits half as long for a fresh pass) and allow 6 failures, so a
# member still has the same 6 s to come back from a restart or an election.
HEALTH = {"interval": 1, "unhealthy_threshold": 6}


@pytest.fixture
async def cloud(store: Store, tmp_path: Path, recovery_policy: RecoveryPolicy) -> AsyncIterator[Cloud]:
    """The e2e cloud, with the package's image directory given to the simulator."""
    images = str(PACKAGE / "images")
    async with simulated_cloud(store, tmp_path, "--images-dir", images, recovery=recovery_policy) as sim:
        yield sim


@pytest.fixture
async def pitrixd_api(cloud: Cloud) -> AsyncIterator[TestClient[Any, Any]]:
    """pitrixd's admin API over the test's runtime service (its /metrics, as a scraper sees it)."""
    async with TestClient(TestServer(create_app(cloud.service), host="127.0.0.1")) as client:
        yield client


async def etcd_series(api: TestClient[Any, Any], cid: str) -> dict[tuple[str, str, str], float]:
    """The app-metric samples of cluster ``cid`` at /metrics: (series, node, item) → value."""
    text = await (await api.get("/metrics")).text()
    return {
        (s.name, s.labels["node"], s.labels["item"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "item" in s.labels and s.labels["cluster"] == cid and s.labels["role"] == "etcd"
    }


def etcd_app(**env: Any) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((PACKAGE / "app.yaml").read_text())
    spec["roles"][0]["health_check"].update(HEALTH)
    params = spec["roles"][0]["env"]
    for key, value in {**TUNING, **env}.items():
        params[key]["default"] = value
    return spec


async def etcd_nodes(cloud: Cloud, cid: str) -> list[Node]:
    return sorted((n for n in await cloud.service.nodes(cid) if n.role == "etcd"), key=lambda n: n.index)


async def assert_members_are_the_nodes(etcd: EtcdHttp, nodes: list[Node]) -> None:
    """Every node's member answers with the same member list: exactly the nodes, by name and
    peer URL (so no dead or departed member lingers), all of them started, and one leader."""
    expected = {(n.node_id, peer_url(n.ip)) for n in nodes}

    async def agreed() -> bool:
        for node in nodes:
            members = await etcd.members(node.ip)
            if {(m.name, m.peer_urls[0]) for m in members} != expected or len(members) != len(nodes):
                return False
        leaders = {(await etcd.status(n.ip))["leader"] for n in nodes}
        ids = {(await etcd.status(n.ip))["header"]["member_id"] for n in nodes}
        return len(leaders) == 1 and leaders <= ids

    await eventually(f"members {sorted(expected)} with one leader", agreed, 30)
    for node in nodes:
        assert await etcd.healthy(node.ip), node.node_id


async def test_one_cluster_bootstraps_rolls_a_parameter_backs_up_scales_to_5_and_back_and_replaces_a_member(
    cloud: Cloud, pitrixd_api: TestClient[Any, Any]
) -> None:
    """One 3-member cluster lives every phase (a boot and an etcd cluster's delete cost ~25 s of the
    suite each): bootstrapped as one cluster; a rolling parameter change losing no write, a refused
    one, a backup restored into a new cluster, the members' metrics; scaled to 5 and back, 7 refused;
    a killed member replaced by recover."""
    service = cloud.service
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=etcd_app())
    cid = cluster.id
    await expect(service, cid, "active")  # create waits for every member's health check
    await bootstrapped_as_one_cluster(cloud, cid)
    await rolling_parameter_change_restarts_members_one_by_one_and_loses_no_write(cloud, pitrixd_api, cid)
    await scaled_to_5_and_back_and_7_refused(cloud, cid)
    await killed_member_is_replaced_by_recover_and_the_dead_one_removed(cloud, cid)

    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    assert await cloud.live_names() == []


async def rolling_parameter_change_restarts_members_one_by_one_and_loses_no_write(
    cloud: Cloud, pitrixd_api: TestClient[Any, Any], cid: str
) -> None:
    service, etcd = cloud.service, EtcdHttp(cloud.http)
    nodes = await etcd_nodes(cloud, cid)
    ips = [n.ip for n in nodes]
    before = {n.node_id: etcd_pid(cloud, n) for n in nodes}

    writer = Writer(etcd, ips)
    writing = asyncio.create_task(writer.run())
    try:
        await eventually("the writer's first writes", lambda: _count(writer, 20), 30)
        before_rollout = len(writer.acked)
        job = await service.update_env(cid, {"etcd": {"heartbeat-interval": 150}})
        await expect(service, cid, "active")
        after_rollout = len(writer.acked)
        await eventually("writes after the rollout", lambda: _count(writer, after_rollout + 20), 30)
    finally:
        writer.stop.set()
        await writing

    steps = {s.name: s for s in await service.job_steps(cid, job.id)}
    batches = [steps[name] for name in ("canary", "batch-2", "batch-3", "commit-env")]
    for earlier, later in itertools.pairwise(batches):  # one member at a time
        assert earlier.finished is not None and earlier.finished <= later.started, (earlier, later)
    # Each member runs with the new setting: restarted, not just re-rendered.
    for node in nodes:
        pid = etcd_pid(cloud, node)
        assert pid != before[node.node_id], node.node_id
        flags = etcd_flags(pid)
        assert flags[flags.index("--heartbeat-interval") + 1] == "150", flags
    await assert_members_are_the_nodes(etcd, nodes)
    stored = await etcd.keys(ips[0], "w/")
    # The cluster took writes while its members restarted one by one.
    assert after_rollout > before_rollout, (before_rollout, after_rollout, writer.failed)
    lost = writer.acked - stored
    assert not lost, f"{len(lost)} acknowledged writes lost: {sorted(lost)[:5]}"

    # An election timeout under 5 heartbeats (etcd would not start with it) passes the spec's range
    # but not the template's check: the canary fails, the old value is put back, nothing restarts.
    running = {n.node_id: etcd_pid(cloud, n) for n in nodes}
    job = await service.update_env(cid, {"etcd": {"election-timeout": 300}})
    after = await expect(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "failed"
    assert "previous values restored" in (after.last_error or ""), after.last_error
    assert {n.node_id: etcd_pid(cloud, n) for n in nodes} == running

    # Backup (the app's `backup` saves etcd's keyspace into etcd-1's volume, which is snapshotted),
    # then a key written after it; a NEW one-member cluster restored from the backup holds exactly
    # the keys of backup time, as its own member answers over etcd's API.
    await etcd.put(ips[0], "w/backup-marker", "before")
    keys_at_backup = await etcd.keys(ips[0], "w/")
    job = await service.act(cid, "backup", {"name": "e2e"})
    await expect(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "successful"
    [backup] = await service.backups.of_cluster(cid)
    assert backup.status == "complete" and [s.node_id for s in backup.snapshots] == ["etcd-1"], backup
    await etcd.put(ips[0], "w/after-backup", "not in it")
    restored, _ = await service.backups.restore(owner="o", restore={"backup": backup.id}, counts={"etcd": 1})
    await expect(service, restored.id, "active")
    [member] = await etcd_nodes(cloud, restored.id)
    await assert_members_are_the_nodes(etcd, [member])
    assert await etcd.keys(member.ip, "w/") == keys_at_backup
    assert await etcd.get(member.ip, "w/backup-marker") == "before"
    await service.delete_cluster(restored.id)  # a one-member cluster: no leader to hand over
    await expect(service, restored.id, "deleted")
    assert len(await etcd.members(ips[0])) == 3  # the source cluster is untouched
    for node in nodes:
        assert "ELECTION_TIMEOUT=2000\n" in cloud.vm_file(node.instance_id, "/opt/etcd/etc/tuning.env")
    await assert_members_are_the_nodes(etcd, nodes)

    # The package's monitor items, read by each member's agent from etcd's own /metrics, are
    # series at pitrixd's /metrics labelled by cluster, role and node.
    async def every_member_reported() -> dict[tuple[str, str, str], float] | None:
        found = await etcd_series(pitrixd_api, cid)
        wanted = {
            key
            for n in nodes
            for key in (
                ("pitrix_app_gauge", n.node_id, "has_leader"),
                ("pitrix_app_gauge", n.node_id, "db_size"),
                ("pitrix_app_counter_total", n.node_id, "proposals_committed"),
            )
        }
        # A report taken while a restarted member was still electing may say no leader: the next one.
        led = all(found.get(("pitrix_app_gauge", n.node_id, "has_leader")) == 1.0 for n in nodes)
        return found if wanted <= set(found) and led else None

    found = await eventually("etcd's metrics of every member at /metrics", every_member_reported, 60)
    for node in nodes:
        assert found[("pitrix_app_gauge", node.node_id, "db_size")] > 0
        assert found[("pitrix_app_counter_total", node.node_id, "proposals_committed")] > 0


async def _down(etcd: EtcdHttp, ip: str) -> bool:
    return not await etcd.healthy(ip)


async def _count(writer: Writer, n: int) -> bool:
    return len(writer.acked) >= n


def etcd_pid(cloud: Cloud, node: Node) -> int:
    return int(cloud.vm_file(node.instance_id, "/var/run/etcd.pid"))


def etcd_flags(pid: int) -> list[str]:
    """The command line of the running etcd: what it was really started with."""
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def joined(cloud: Cloud, node: Node) -> bool:
    """Whether the node's etcd-node started it as a new member of a live cluster (not bootstrapped)."""
    return "(join: " in cloud.vm_file(node.instance_id, "/var/log/etcd/etcd-node.log")


async def leader_node(etcd: EtcdHttp, nodes: list[Node]) -> Node:
    ids = {(await etcd.status(n.ip))["header"]["member_id"]: n for n in nodes}
    return ids[(await etcd.status(nodes[0].ip))["leader"]]


async def bootstrapped_as_one_cluster(cloud: Cloud, cid: str) -> None:
    etcd = EtcdHttp(cloud.http)
    first = await etcd_nodes(cloud, cid)
    assert [n.node_id for n in first] == ["etcd-1", "etcd-2", "etcd-3"]
    await assert_members_are_the_nodes(etcd, first)
    # One cluster, not three: a write through one member is read through another.
    await etcd.put(first[0].ip, "before", "3 members")
    assert await etcd.get(first[2].ip, "before") == "3 members"
    for node in first:  # the member's data is under the role's volume mount point
        assert (cloud.workdir / "sim/vms" / node.instance_id / "root/data/etcd/member").is_dir()


async def scaled_to_5_and_back_and_7_refused(cloud: Cloud, cid: str) -> None:
    service, etcd = cloud.service, EtcdHttp(cloud.http)
    await service.scale(cid, "etcd", 5)
    await expect(service, cid, "active")
    grown = await etcd_nodes(cloud, cid)
    assert [n.node_id for n in grown] == [f"etcd-{i}" for i in range(1, 6)]
    await assert_members_are_the_nodes(etcd, grown)
    added = grown[3:]
    # member add on a live member, the list published, the new members started from it
    assert [joined(cloud, n) for n in grown] == [False, False, False, True, True]
    for node in added:
        assert await etcd.get(node.ip, "before") == "3 members"

    leader = await leader_node(etcd, grown)
    await service.scale(cid, "etcd", 3)
    await expect(service, cid, "active")
    kept = await etcd_nodes(cloud, cid)
    assert len(kept) == 3 and leader.node_id in {n.node_id for n in kept}  # ordering: leader last
    await assert_members_are_the_nodes(etcd, kept)
    gone = {n.instance_id for n in grown} - {n.instance_id for n in kept}
    statuses = {vm["instance_id"]: vm["status"] for vm in await cloud.ledger()}
    assert {statuses[i] for i in gone} == {"terminated"}
    assert await etcd.get(kept[-1].ip, "before") == "3 members"

    # 3 started members cannot keep a quorum of 7 while 4 new ones start: the pre_check refuses,
    # before any instance is made.
    await service.scale(cid, "etcd", 7)
    refused = await expect(service, cid, "active")
    assert "cannot keep a quorum of 7" in (refused.last_error or ""), refused.last_error
    assert len(await etcd_nodes(cloud, cid)) == 3 and len(live(await cloud.ledger())) == 4  # + metad


async def killed_member_is_replaced_by_recover_and_the_dead_one_removed(cloud: Cloud, cid: str) -> None:
    service, etcd = cloud.service, EtcdHttp(cloud.http)
    nodes = await etcd_nodes(cloud, cid)
    dead = nodes[1]
    await etcd.put(nodes[0].ip, "before-crash", "crash")

    async with cloud.http.post(f"{cloud.sim_url}/_sim/instances/{dead.instance_id}/crash") as reply:
        assert reply.status == 200 and (await reply.json())["ok"]
    await eventually("the crashed member to stop answering", lambda: _down(etcd, dead.ip), 10)
    # Two of three keep the quorum: the cluster still takes writes.
    survivors = [nodes[0].ip, nodes[2].ip]
    await eventually("a write with one member dead", lambda: etcd.put(survivors[1], "during", "2 of 3"), 30)

    await service.recover(cid, nodes=[dead.node_id])
    await expect(service, cid, "active")
    now = await etcd_nodes(cloud, cid)
    replacement = next(n for n in now if n.node_id == dead.node_id)
    assert replacement.instance_id != dead.instance_id
    # The member list is the nodes: the dead member was removed, the replacement added and started.
    await assert_members_are_the_nodes(etcd, now)
    members = await etcd.members(replacement.ip)
    if replacement.ip != dead.ip:
        assert peer_url(dead.ip) not in {url for m in members for url in m.peer_urls}
    assert joined(cloud, replacement)
    assert await etcd.get(replacement.ip, "before-crash") == "crash"
    assert await etcd.get(replacement.ip, "during") == "2 of 3"
