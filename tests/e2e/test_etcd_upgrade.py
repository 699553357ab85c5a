"""examples/etcd-cluster upgraded on the simulator, one 3-member cluster through three upgrades,
a host-side writer counting etcd's acknowledged writes throughout (none may be lost):

1. 3.4.0 -> 3.4.1 in place: new templates and a new parameter reach each member batch by batch
   (leader last), each restarts with the new flag, the upgrade service records the version;
2. 3.4.1 -> 3.4.2 (a test-only variant whose upgrade service fails on the second batch): the two
   members touched are rolled back (rollback service, 3.4.1's templates again) and the cluster
   stays on 3.4.1 with every member healthy;
3. 3.4.1 -> 3.5.0 by replacing nodes: each member's instance is rebuilt from the new image with
   its volume re-attached; it keeps its data (restarted from its data dir, not bootstrapped).

Membership, health and data are read from etcd itself (``etcd_http``), never from pitrix.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_cloud import Cloud, simulated_cloud
from etcd_http import EtcdHttp, Writer, eventually
from test_etcd_cluster import HEALTH, TUNING, assert_members_are_the_nodes, etcd_flags, etcd_nodes, etcd_pid
from test_lifecycle import expect

from pitrix.runtime.catalog import AppCatalog
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.store import Store

pytestmark = pytest.mark.e2e

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "etcd-cluster"
# The second batch's upgrade service fails: every member that ran it marks itself in etcd, and
# the second mark refuses. Nothing else differs from 3.4.1 but a comment in the tuning template.
FAILING_UPGRADE = (
    "opt/etcd/bin/etcd-node upgrade && . ./opt/etcd/etc/cluster.env && "
    'e() { ETCDCTL_API=3 etcdctl --endpoints="http://$IP:2379" "$@"; } && '
    'e put "upgrade-probe/$NAME" x >/dev/null && '
    '[ "$(e get --prefix --keys-only upgrade-probe/ | grep -c .)" -lt 2 ] || '
    '{ echo "the second batch of 3.4.2 fails by design" >&2; exit 1; }'
)


@pytest.fixture
async def cloud(store: Store, tmp_path: Path, recovery_policy: RecoveryPolicy) -> AsyncIterator[Cloud]:
    images = str(PACKAGE / "images")
    async with simulated_cloud(store, tmp_path, "--images-dir", images, recovery=recovery_policy) as sim:
        yield sim


def package(name: str) -> dict[str, Any]:
    """A version of the package, its timing defaults and health check sized for a loaded machine
    (as the e2e tests of the etcd package do), the same in every version so none changes them."""
    spec: dict[str, Any] = yaml.safe_load((PACKAGE / name).read_text())
    spec["roles"][0]["health_check"].update(HEALTH)
    for key, value in TUNING.items():
        spec["roles"][0]["env"][key]["default"] = value
    return spec


def failing_variant() -> dict[str, Any]:
    spec = copy.deepcopy(package("app-3.4.1.yaml"))
    spec["version"] = "3.4.2"
    spec["upgrade"]["from_versions"] = ["3.4.1"]
    role = spec["roles"][0]
    role["services"]["upgrade"]["cmd"] = FAILING_UPGRADE
    tuning = next(t for t in role["templates"] if t["name"] == "etcd-tuning")
    tuning["text"] += "# release 3.4.2\n"
    return spec


class FollowingWriter(Writer):
    """The writer, told the members' addresses again as nodes are rebuilt on new ones."""

    async def follow(self, cloud: Cloud, cid: str) -> None:
        while not self.stop.is_set():
            ips = [n.ip for n in await etcd_nodes(cloud, cid) if n.ip]
            if len(ips) == len(self.ips):  # the writer picks members by position: never fewer
                self.ips[:] = ips
            await asyncio.sleep(0.5)  # a pace, as the writer's own: nothing is waited for here


async def test_upgrades_in_place_rolled_back_and_by_replacing_nodes_lose_no_write(cloud: Cloud) -> None:
    service, etcd = cloud.service, EtcdHttp(cloud.http)
    catalog = AppCatalog(service.store)
    for spec in (
        package("app.yaml"),
        package("app-3.4.1.yaml"),
        failing_variant(),
        package("app-3.5.0.yaml"),
    ):
        await catalog.register(spec, "o")
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=package("app.yaml"))
    cid = cluster.id
    await expect(service, cid, "active")
    nodes = await etcd_nodes(cloud, cid)
    await etcd.put(nodes[0].ip, "before", "3.4.0")

    preview = await service.upgrade_preview(cid, {"version": "3.4.1"})
    assert preview["params"]["added"] == {"env.etcd.max-request-bytes": "2097152"}
    assert preview["roles"]["etcd"]["templates"]["changed"] == ["etcd-tuning"]
    assert [b["nodes"] for b in preview["batches"]] == [["etcd-1"], ["etcd-2"], ["etcd-3"]]
    assert (await service.get_cluster(cid)).app.version == "3.4.0"  # a dry run starts nothing

    writer = FollowingWriter(etcd, [n.ip for n in nodes])
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(writer.follow(cloud, cid))]
    try:
        # 1. in place: each member restarts with the new parameter, one at a time
        await eventually("the writer's first writes", lambda: _count(writer, 20), 30)
        pids = {n.node_id: etcd_pid(cloud, n) for n in nodes}
        job = await service.act(cid, "upgrade", {"version": "3.4.1"})
        upgraded = await expect(service, cid, "active")
        assert upgraded.app.version == "3.4.1" and (await service.get_job(cid, job.id)).status == "successful"
        steps = {s.name: s for s in await service.job_steps(cid, job.id)}
        ordered = [steps[n] for n in ("etcd:canary", "etcd:batch-2", "etcd:batch-3", "commit-upgrade")]
        for earlier, later in itertools.pairwise(ordered):
            assert earlier.finished is not None and earlier.finished <= later.started, (earlier, later)
        for node in nodes:
            pid = etcd_pid(cloud, node)
            assert pid != pids[node.node_id], node.node_id  # restarted by the new template's reload
            flags = etcd_flags(pid)
            assert flags[flags.index("--max-request-bytes") + 1] == "2097152", flags
            assert cloud.vm_file(node.instance_id, "/opt/etcd/etc/version") == "3.4.1\n"
        await assert_members_are_the_nodes(etcd, nodes)
        mark = len(writer.acked)
        await eventually("writes after the upgrade", lambda: _count(writer, mark + 20), 30)

        # 2. the failing variant: canary passes, the second batch fails, both are rolled back
        job = await service.act(cid, "upgrade", {"version": "3.4.2"})
        after = await expect(service, cid, "active")
        assert (await service.get_job(cid, job.id)).status == "failed"
        assert "fails by design" in (after.last_error or "") and "back on 3.4.1" in (after.last_error or "")
        assert after.app.version == "3.4.1"
        for node in nodes:
            assert "3.4.2" not in cloud.vm_file(node.instance_id, "/opt/etcd/etc/tuning.env"), node.node_id
            assert cloud.vm_file(node.instance_id, "/opt/etcd/etc/version") == "3.4.1\n", node.node_id
        await assert_members_are_the_nodes(etcd, nodes)
        mark = len(writer.acked)
        await eventually("writes after the rollback", lambda: _count(writer, mark + 20), 30)

        # 3. replace: new instances from the new image, the members' data kept on their volumes
        await etcd.put(nodes[0].ip, "before-replace", "3.4.1")
        job = await service.act(cid, "upgrade", {"version": "3.5.0"})
        replaced = await expect(service, cid, "active")
        assert replaced.app.version == "3.5.0" and (await service.get_job(cid, job.id)).status == "successful"
        rebuilt = await etcd_nodes(cloud, cid)
        assert {n.node_id: n.volume_id for n in rebuilt} == {n.node_id: n.volume_id for n in nodes}
        for old, new in zip(nodes, rebuilt, strict=True):
            assert new.instance_id != old.instance_id, new.node_id
            assert cloud.vm_file(new.instance_id, "/opt/etcd/release") == "etcd-r2\n"
            log = cloud.vm_file(new.instance_id, "/var/log/etcd/etcd-node.log")
            assert "restart: membership from" in log and "bootstrap:" not in log, log
        await assert_members_are_the_nodes(etcd, rebuilt)
        for node in rebuilt:
            assert await etcd.get(node.ip, "before") == "3.4.0"
            assert await etcd.get(node.ip, "before-replace") == "3.4.1"
        mark = len(writer.acked)
        await eventually("writes after the replace", lambda: _count(writer, mark + 20), 30)
    finally:
        writer.stop.set()
        await asyncio.gather(*tasks)

    stored = await etcd.keys(rebuilt[0].ip, "w/")
    lost = writer.acked - stored
    assert not lost, f"{len(lost)} acknowledged writes lost: {sorted(lost)[:5]}"
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")


async def _count(writer: Writer, n: int) -> bool:
    return len(writer.acked) >= n
