"""A create is `active` only once every node of a role with a health check passes it (issue 24)."""

from __future__ import annotations

import json

import pytest
from e2e_cloud import Cloud, demo_app

from pitrix.runtime.records import Cluster

pytestmark = pytest.mark.e2e

# Healthy only while the web server runs: the agent's first check, made when it boots, fails.
WEB_RUNNING = 'kill -0 "$(cat var/run/web.pid)"'


async def test_create_is_active_only_once_health_checks_pass(cloud: Cloud) -> None:
    service = cloud.service
    app = demo_app()
    # The next check comes 5 s after the failing first one: the rest of the create takes less.
    app["roles"][0]["health_check"] = {"cmd": WEB_RUNNING, "interval": 5}
    cluster, _ = await service.create_cluster(owner="o1", runtime="sim", app=app, counts={"web": 3, "lb": 1})
    cid = cluster.id

    async def ended(c: Cluster) -> bool:
        return c.state in ("active", "failed")

    done = await service.wait(cid, ended, 180)
    assert done.state == "active", done.last_error
    record = await service.metadata.get(done.owner, done.runtime)
    assert record is not None
    client = service.metadata.client(record)
    webs = [n.instance_id for n in await service.nodes(cid) if n.role == "web"]
    # Read at once, not waited for: what holds the moment the cluster says it is active.
    health = {iid: await client.get_data(f"/_pitrix/status/{cid}/{iid}/health") for iid in webs}
    verdicts = {iid: json.loads(h) if isinstance(h, str) else h for iid, h in health.items()}
    assert all(v is not None and v["ok"] is True for v in verdicts.values()), verdicts
    job = await service.job_steps(cid, done.job_id)
    assert "wait-healthy" in {s.name for s in job}
