"""delete runs the ``stop`` then the ``destroy`` service before the instances go (a log file the
services append to, outside the VMs, proves they ran and in which order); a failing one fails the
delete with the node's output unless ``force``; with ``force`` a cluster whose instances are gone
is deleted too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e_cloud import Cloud, demo_app
from test_lifecycle import expect

from pitrix.runtime.records import StepRecord

pytestmark = pytest.mark.e2e


def teardown_app(log: Path, *, destroy_web: str = "") -> dict[str, Any]:
    """The demo with stop and destroy services that append ``<service> <role>`` to ``log``; lb's
    are of a later order, so (in reverse order, as a stop) they run before web's."""
    app = demo_app()
    web, lb = app["roles"]
    for role, order in ((web, 0), (lb, 1)):
        name = role["name"]
        role["services"]["stop"] = {
            "cmd": f"echo stop {name} >> {log} && opt/demo/bin/demo stop {name}",
            "order": order,
            "timeout": 30,
        }
        role["services"]["destroy"] = {
            "cmd": f"echo destroy {name} >> {log}" + (destroy_web if name == "web" else ""),
            "order": order,
            "timeout": 30,
        }
    return app


def steps(records: list[StepRecord]) -> dict[str, StepRecord]:
    return {s.name: s for s in records}


async def test_delete_runs_stop_then_destroy_on_every_node(cloud: Cloud, tmp_path: Path) -> None:
    service, log = cloud.service, tmp_path / "teardown.log"
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=teardown_app(log), counts={"web": 2, "lb": 1}
    )
    await expect(service, cluster.id, "active")
    assert not log.exists()
    job = await service.delete_cluster(cluster.id)
    await expect(service, cluster.id, "deleted")
    assert log.read_text().splitlines() == [
        "stop lb",
        "stop web",
        "stop web",
        "destroy lb",
        "destroy web",
        "destroy web",
    ]
    names = list(steps(await service.job_steps(cluster.id, job.id)))
    assert names.index("destroy:web") < names.index("unregister") < names.index("terminate")
    assert await cloud.live_names() == []


async def test_a_failing_destroy_fails_the_delete_unless_forced(cloud: Cloud, tmp_path: Path) -> None:
    service, log = cloud.service, tmp_path / "teardown.log"
    app = teardown_app(log, destroy_web=" && echo 'data volume busy' && exit 3")
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=app, counts={"web": 1, "lb": 1})
    await expect(service, cluster.id, "active")
    await service.delete_cluster(cluster.id)
    failed = await expect(service, cluster.id, "failed")
    assert failed.last_error is not None
    assert "destroy failed on 1 node(s)" in failed.last_error and "data volume busy" in failed.last_error
    assert [n for n in await cloud.live_names() if n.startswith(cluster.id)] == [
        f"{cluster.id}-lb-1",
        f"{cluster.id}-web-1",
    ]  # nothing was terminated

    job = await service.delete_cluster(cluster.id, body={"force": True})
    await expect(service, cluster.id, "deleted")
    records = steps(await service.job_steps(cluster.id, job.id))
    assert records["destroy:web"].status == "done"
    assert "data volume busy" in records["destroy:web"].detail and "force" in records["destroy:web"].detail
    assert log.read_text().splitlines().count("destroy web") == 2
    assert await cloud.live_names() == []


async def test_gone_instances_fail_a_delete_at_once_and_force_deletes_the_cluster(
    cloud: Cloud, tmp_path: Path
) -> None:
    service, log = cloud.service, tmp_path / "teardown.log"
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=teardown_app(log), counts={"web": 1, "lb": 1}
    )
    await expect(service, cluster.id, "active")
    nodes = await service.nodes(cluster.id)
    provider = await service.provider_for("sim")
    await provider.terminate_instances([n.instance_id for n in nodes])  # behind pitrix's back
    lb = next(n for n in nodes if n.role == "lb")

    # Without force the services cannot run: named at once, not waited for until their timeout.
    await service.delete_cluster(cluster.id)
    failed = await expect(service, cluster.id, "failed")
    assert failed.last_error is not None
    assert f"lb-1: its instance {lb.instance_id} is gone" in failed.last_error  # lb stops first
    assert "delete with force" in failed.last_error

    job = await service.delete_cluster(cluster.id, body={"force": True})
    await expect(service, cluster.id, "deleted")
    records = steps(await service.job_steps(cluster.id, job.id))
    for name in ("stop:lb", "stop:web", "destroy:lb", "destroy:web"):
        assert records[name].status == "done" and "is gone" in records[name].detail, records[name]
    assert not log.exists()  # nothing could run them
    assert await cloud.live_names() == []
