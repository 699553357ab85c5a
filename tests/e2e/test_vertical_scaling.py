"""resize: a role's nodes given more CPU, memory and volume, batch by batch, on simulator VMs.

A two-node web role with a volume and an ``ordering`` (web-2 first): each node is stopped,
resized, started, and its ``start`` service (which writes down what the guest sees: its
``proc/cpuinfo``, ``proc/meminfo`` and the volume's ``sys/block`` size) runs before the health gate
lets the next batch go. A node whose start leaves it unhealthy fails the next resize at its batch,
naming it; later batches are not touched, the cluster stays active and that size is not recorded,
so a scale-out afterwards makes the new node the size of the resize that finished.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_cloud import Cloud, demo_app
from test_lifecycle import expect
from test_update_env import steps_by_name

from pitrix.metad import keyspace as ks
from pitrix.runtime.service import InvalidRequest

pytestmark = pytest.mark.e2e

# What the guest sees at each start: CPUs, memory (kB) and the volume's size in 512-byte sectors.
SEEN = (
    "echo \"$(grep -c ^processor proc/cpuinfo) $(awk '/MemTotal/ {print $2}' proc/meminfo)"
    ' $(cat sys/block/vdb/size)" >> seen.log'
)
START = f"{SEEN} && opt/demo/bin/demo start web && if [ -e poison ]; then touch broken; fi"


def resize_app() -> dict[str, Any]:
    app = demo_app()
    web = app["roles"][0]
    web["services"]["start"] = {"cmd": START, "timeout": 30}
    web["volume"] = {"size": 10, "mount_point": "/data"}
    web["health_check"] = {"cmd": "test ! -e broken", "interval": 1, "timeout": 5, "unhealthy_threshold": 2}
    web["ordering"] = "printf 'web-2\\nweb-1\\n'"  # web-1 "leads": it goes last
    web["vertical_scaling"] = {"max_cpu": 4, "max_memory": 8192, "max_volume_size": 100}
    app["roles"][1]["count"] = 0  # the lb: no volume, no nodes
    return app


def seen(cloud: Cloud, instance_id: str) -> list[str]:
    return cloud.vm_file(instance_id, "seen.log").splitlines()


async def test_resize_rolls_through_the_role_in_its_order_and_new_nodes_get_the_new_size(
    cloud: Cloud,
) -> None:
    service = cloud.service
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=resize_app())
    cid = cluster.id
    await expect(service, cid, "active")
    web = {n.node_id: n for n in await service.nodes(cid) if n.role == "web"}
    sectors = 10 * 1024**3 // 512
    for node in web.values():
        assert seen(cloud, node.instance_id) == [f"1 {1024 * 1024} {sectors}"]

    for body, message in [
        ({"roles": {"db": {"cpu": 2}}}, "roles.db: cluster"),
        ({"roles": {"web": {"cpu": 8}}}, r"roles.web.cpu: 8 is outside the role's bounds \[1, 4\]"),
        ({"roles": {"web": {"memory": 64}}}, "roles.web.memory: 64 is outside"),
        ({"roles": {"web": {"volume_size": 5}}}, "roles.web.volume_size: 5 GiB would shrink"),
        ({"roles": {"web": {"volume_size": 500}}}, "roles.web.volume_size: 500 is outside"),
        ({"roles": {"lb": {"volume_size": 20}}}, "roles.lb.volume_size: role lb has no volume"),
        ({"roles": {"web": {"cpu": 1, "memory": 1024}}}, "roles.web: its nodes already have that size"),
        ({"roles": {"web": {"disk": 1}}}, "roles.web.disk: not a field of resize"),
        ({"roles": {"web": {"cpu": "2"}}}, "roles.web.cpu: must be a positive integer"),
        ({"roles": {}}, "roles: must be an object naming at least one role"),
        ({"roles": {"web": {"cpu": 2}}, "force": True}, "force: not a field of resize"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            await service.act(cid, "resize", body)

    job = await service.act(cid, "resize", {"roles": {"web": {"cpu": 2, "memory": 2048, "volume_size": 20}}})
    resized = await expect(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "successful"
    steps = steps_by_name(await service.job_steps(cid, job.id))
    assert [s for s in steps if s != "metadata"] == [
        "resize:web:batch-1",
        "healthy:web:batch-1",
        "resize:web:batch-2",
        "healthy:web:batch-2",
        "record:web",
    ]
    assert steps["resize:web:batch-1"].detail.startswith("web-2:"), steps["resize:web:batch-1"].detail
    assert steps["resize:web:batch-2"].detail.startswith("web-1:")
    assert steps["healthy:web:batch-1"].finished <= steps["resize:web:batch-2"].started
    grown = 20 * 1024**3 // 512
    for node in web.values():  # same instances, same volumes: resized, not replaced
        assert seen(cloud, node.instance_id)[-1] == f"2 {2048 * 1024} {grown}"
    assert {n.node_id: (n.instance_id, n.volume_id) for n in await service.nodes(cid) if n.role == "web"} == {
        n.node_id: (n.instance_id, n.volume_id) for n in web.values()
    }
    record = await service.metadata.get(resized.owner, resized.runtime)
    assert record is not None
    metad = service.metadata.client(record)
    for node in web.values():  # what the nodes' templates read as /host/cpu and /host/memory
        published = await metad.get_data(ks.host(cid, "web", node.instance_id))
        assert (published["cpu"], published["memory"]) == ("2", "2048"), published
    assert resized.resources["web"].model_dump() == {
        "cpu": 2,
        "memory": 2048,
        "instance_type": "",
        "volume_size": 20,
    }

    # web-2's start leaves it unhealthy: the job fails at the first batch's gate, naming it; the
    # cluster stays active, web-2 keeps its new size (no rollback), web-1 (a later batch) is not
    # touched, and the role's size is not recorded
    poisoned = cloud.workdir / "sim" / "vms" / web["web-2"].instance_id / "root"
    (poisoned / "poison").touch()
    job = await service.act(cid, "resize", {"roles": {"web": {"memory": 3072}}})
    after = await expect(service, cid, "active")
    failed = await service.get_job(cid, job.id)
    assert failed.status == "failed" and failed.error is not None and "web-2 (unhealthy" in failed.error
    steps = steps_by_name(await service.job_steps(cid, job.id))
    assert steps["healthy:web:batch-1"].status == "failed"
    assert "resize:web:batch-2" not in steps and "record:web" not in steps
    assert after.resources["web"].memory == 2048
    assert seen(cloud, web["web-2"].instance_id)[-1] == f"2 {3072 * 1024} {grown}"
    assert seen(cloud, web["web-1"].instance_id)[-1] == f"2 {2048 * 1024} {grown}"
    for name in ("poison", "broken"):
        (poisoned / name).unlink()
    # a node made after it is made the size recorded (the finished resize's, not the failed one's)
    await service.scale(cid, "web", 3)
    await expect(service, cid, "active")
    added = next(n for n in await service.nodes(cid) if n.node_id == "web-3")
    assert seen(cloud, added.instance_id) == [f"2 {2048 * 1024} {grown}"]

    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
