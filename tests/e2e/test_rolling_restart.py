"""restart: a rolling restart, batch by batch, each batch gated on its nodes' health (and, on the
same cluster, an in-place upgrade whose second batch fails, rolled back by restarts, and a replace
upgrade whose canary fails, rebuilt back from the old version).

The web role restarts by its ``restart`` service, two nodes at a time; the lb role has none and
restarts by ``stop`` then ``start``. A node whose restart leaves it unhealthy (the test poisons
one VM) fails the job at its batch's health gate, and the batches after it are never touched.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_cloud import Cloud, demo_app
from test_lifecycle import expect
from test_update_env import steps_by_name

from pitrix.runtime.catalog import AppCatalog
from pitrix.runtime.service import InvalidRequest

pytestmark = pytest.mark.e2e

RESTART = (
    "opt/demo/bin/demo stop web && opt/demo/bin/demo start web && echo restarted >> restarts.log"
    " && if [ -e poison ]; then touch broken; fi"
)


def restart_app() -> dict[str, Any]:
    app = demo_app()
    web = app["roles"][0]
    web["services"]["restart"] = {"cmd": RESTART, "timeout": 30, "max_in_flight": 2}
    web["health_check"] = {"cmd": "test ! -e broken", "interval": 1, "timeout": 5, "unhealthy_threshold": 2}
    return app


def failing_upgrade_app() -> dict[str, Any]:
    """1.1.0: a template more, and an upgrade service that fails where the test left a mark;
    no rollback service, so a rollback re-delivers 1.0.0's templates and restarts the node."""
    app = restart_app()
    app["version"] = "1.1.0"
    app["upgrade"] = {"from_versions": ["1.0.*"], "canary": 1, "max_in_flight": 2}
    web = app["roles"][0]
    web["templates"] = [{"name": "release", "dest": "/etc/demo-release", "text": "release 1.1.0\n"}]
    web["services"]["upgrade"] = {
        "cmd": 'if [ -e fail-upgrade ]; then echo "upgrade refused here" >&2; exit 1; fi',
        "timeout": 30,
    }
    return app


def failing_replace_app() -> dict[str, Any]:
    """1.2.0 by replacing nodes: its upgrade service (run on a rebuilt node before start) fails."""
    app = restart_app()
    app["version"] = "1.2.0"
    app["upgrade"] = {"from_versions": ["1.0.*"], "policy": "replace", "canary": 1, "max_in_flight": 2}
    app["roles"][0]["services"]["upgrade"] = {"cmd": "echo no data to migrate >&2; exit 1", "timeout": 30}
    return app


def restarts(cloud: Cloud, instance_id: str) -> int:
    path = cloud.workdir / "sim" / "vms" / instance_id / "root" / "restarts.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_rolling_restart_gated_on_health_stops_at_the_failing_batch(cloud: Cloud) -> None:
    service = cloud.service
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=restart_app(), counts={"web": 5, "lb": 1}
    )
    cid = cluster.id
    await expect(service, cid, "active")
    web = {n.node_id: n for n in await service.nodes(cid) if n.role == "web"}

    for body, message in [
        ({"roles": ["db"]}, "roles.0: cluster"),
        ({"nodes": ["web-9"]}, "nodes.0: cluster"),
        ({"roles": ["lb"], "nodes": ["web-1"]}, "nodes.0: web-1 is not of the roles given"),
        ({"roles": "web"}, "roles: must be a non-empty list"),
        ({"force": True}, "force: not a field of restart"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            await service.act(cid, "restart", body)

    # every role: web by its restart service, two at a time, each batch healthy before the next;
    # the web role's start order (1) comes before the lb's (2)
    job = await service.act(cid, "restart", {})
    await expect(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "successful"
    steps = steps_by_name(await service.job_steps(cid, job.id))
    assert [s for s in steps if s != "metadata"] == [
        "restart:web:batch-1",
        "healthy:web:batch-1",
        "restart:web:batch-2",
        "healthy:web:batch-2",
        "restart:web:batch-3",
        "healthy:web:batch-3",
        "restart:lb:batch-1",
    ]
    assert steps["healthy:web:batch-1"].finished <= steps["restart:web:batch-2"].started
    assert "stop on 1 nodes" in steps["restart:lb:batch-1"].detail
    assert "start on 1 nodes" in steps["restart:lb:batch-1"].detail
    assert {node_id: restarts(cloud, n.instance_id) for node_id, n in web.items()} == dict.fromkeys(web, 1)

    # upgrade: the canary (web-1) takes 1.1.0's template; batch 2 (web-2, web-3) fails at web-2's
    # upgrade service; web-3, web-2 and web-1 get 1.0.0's templates back and restart one by one
    await AppCatalog(service.store).register(failing_upgrade_app(), "o")
    root = {node_id: cloud.workdir / "sim" / "vms" / n.instance_id / "root" for node_id, n in web.items()}
    (root["web-2"] / "fail-upgrade").touch()
    job = await service.act(cid, "upgrade", {"version": "1.1.0"})
    after = await expect(service, cid, "active")
    assert after.app.version == "1.0.0" and (await service.get_job(cid, job.id)).status == "failed"
    assert "upgrade refused here" in (after.last_error or ""), after.last_error
    assert "3 node(s) back on 1.0.0: web-1, web-2, web-3" in (after.last_error or ""), after.last_error
    assert (root["web-1"] / "etc/demo-release").read_text() == "release 1.1.0\n"  # it had it
    assert not any((r / "etc/confd/conf.d/app-release.toml").exists() for r in root.values())
    counts = {node_id: restarts(cloud, n.instance_id) for node_id, n in web.items()}
    assert counts == {"web-1": 2, "web-2": 2, "web-3": 2, "web-4": 1, "web-5": 1}

    # replace: the canary web-1 is rebuilt from 1.2.0, its upgrade service fails, it is rebuilt
    # again from 1.0.0 and started; the cluster stays on 1.0.0, the other nodes untouched
    await AppCatalog(service.store).register(failing_replace_app(), "o")
    job = await service.act(cid, "upgrade", {"version": "1.2.0"})
    after = await expect(service, cid, "active")
    assert after.app.version == "1.0.0" and (await service.get_job(cid, job.id)).status == "failed"
    assert "no data to migrate" in (after.last_error or ""), after.last_error
    assert "1 node(s) rebuilt on 1.0.0: web-1" in (after.last_error or ""), after.last_error
    now = {n.node_id: n for n in await service.nodes(cid) if n.role == "web"}
    assert [i for i in web if now[i].instance_id != web[i].instance_id] == ["web-1"]
    names = [vm["name"] for vm in await cloud.ledger() if vm["name"] == web["web-1"].name]
    assert len(names) == 3  # the first instance, the 1.2.0 one, the 1.0.0 one again
    web = now

    # web-3's restart breaks its health: batch 2 (web-3, web-4) fails at its gate; web-5 untouched
    poison = cloud.workdir / "sim" / "vms" / web["web-3"].instance_id / "root" / "poison"
    poison.touch()
    job = await service.act(cid, "restart", {"roles": ["web"]})
    failed = await expect(service, cid, "failed")
    assert (await service.get_job(cid, job.id)).status == "failed"
    assert failed.last_error is not None and "web-3 (unhealthy" in failed.last_error, failed.last_error
    steps = steps_by_name(await service.job_steps(cid, job.id))
    assert steps["healthy:web:batch-2"].status == "failed"
    assert "restart:web:batch-3" not in steps
    counts = {node_id: restarts(cloud, n.instance_id) for node_id, n in web.items()}
    assert counts == {"web-1": 1, "web-2": 3, "web-3": 3, "web-4": 2, "web-5": 1}  # web-1: a new VM
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
