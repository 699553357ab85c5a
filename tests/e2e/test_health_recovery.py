"""Health-triggered recovery, per app: a node that stays unhealthy past its threshold for the
grace period is replaced when its app asks for it (``recovery.on: [health]``), after its
``action_cmd`` had its one try; an app on the default policy (heartbeat only) keeps it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from e2e_cloud import Cloud, demo_app
from test_lifecycle import expect

from pitrix.runtime.records import Cluster
from pitrix.runtime.recovery import RecoveryPolicy

pytestmark = pytest.mark.e2e
DETECTION_TIMEOUT = 90.0


@pytest.fixture
def recovery_policy() -> RecoveryPolicy:
    return RecoveryPolicy(grace=5.0, max_down_fraction=0.5)


def checked_app(log: Path, **recovery: Any) -> dict[str, Any]:
    app = demo_app()
    app["roles"][0]["health_check"] = {
        "cmd": "test ! -e broken",
        "interval": 1,
        "timeout": 5,
        "unhealthy_threshold": 2,
        # it cannot repair this node: it only leaves a trace of each run, outside the VM (whose
        # root goes with it), naming the VM (the simulator tags each VM's processes)
        "action_cmd": f"echo $PITRIX_VM_ID >> {log}",
    }
    if recovery:
        app["recovery"] = recovery
    return app


async def test_an_unhealthy_node_is_replaced_only_when_its_app_asks(cloud: Cloud) -> None:
    service = cloud.service
    log = cloud.workdir / "actions.log"
    asking, _ = await service.create_cluster(
        owner="o", runtime="sim", app=checked_app(log, on=["heartbeat", "health"]), counts={"web": 2, "lb": 0}
    )
    default, _ = await service.create_cluster(
        owner="o", runtime="sim", app=checked_app(log), counts={"web": 2, "lb": 0}
    )
    await expect(service, asking.id, "active")
    await expect(service, default.id, "active")
    before = {c.id: {n.node_id: n.instance_id for n in await service.nodes(c.id)} for c in (asking, default)}
    roots = {cid: cloud.workdir / "sim" / "vms" / nodes["web-2"] / "root" for cid, nodes in before.items()}
    for root in roots.values():
        (root / "broken").touch()

    async def recovering(c: Cluster) -> bool:
        return c.state == "recovering"

    await service.wait(asking.id, recovering, DETECTION_TIMEOUT)
    done = await expect(service, asking.id, "active")
    job = await service.get_job(asking.id, done.job_id or "")
    assert (job.action, job.args["nodes"]) == ("recover", {"web-2": before[asking.id]["web-2"]})
    after = {n.node_id: n.instance_id for n in await service.nodes(asking.id)}
    assert after["web-1"] == before[asking.id]["web-1"] and after["web-2"] != before[asking.id]["web-2"]
    # the action ran once on the old node, before it was given up on
    runs = log.read_text().splitlines()
    assert runs.count(before[asking.id]["web-2"]) == 1, runs

    # the same failure, as long and longer, on the app that did not ask: kept, action run once
    kept = await service.get_cluster(default.id)
    assert kept.state == "active" and kept.job_id == default.job_id
    assert {n.node_id: n.instance_id for n in await service.nodes(default.id)} == before[default.id]
    assert log.read_text().splitlines().count(before[default.id]["web-2"]) == 1
    assert set(log.read_text().splitlines()) == {before[asking.id]["web-2"], before[default.id]["web-2"]}
    for cid in (asking.id, default.id):
        await service.delete_cluster(cid)
    for cid in (asking.id, default.id):
        await expect(service, cid, "deleted")
