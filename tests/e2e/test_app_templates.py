"""Templates shipped in the app spec: on every node of their role, by either channel, live.

The demo image knows nothing of this template: it reaches the VMs with the agent's own files
(userdata on ``rest``, pushed over SSH on ``ssh``), renders from each node's ``/self``, and follows
an env change like the image's own templates do.
"""

from __future__ import annotations

import stat

import pytest
from e2e_cloud import Cloud, demo_app
from test_lifecycle import expect

pytestmark = pytest.mark.e2e

GREETING = {
    "name": "greeting",
    "dest": "/etc/app/greeting.conf",
    "keys": ["/host"],
    # A node's own env (/host/env) is what an update_env rollout gives it batch by batch.
    "text": '{{getv "/host/instance_id"}} says {{getv "/host/env/greeting" "hello"}}\n',
    "mode": "0640",
}


@pytest.mark.parametrize("channel", ["rest", "ssh"])
async def test_app_templates_render_on_every_node_and_follow_the_env(cloud: Cloud, channel: str) -> None:
    service = cloud.service
    app = demo_app()
    app["roles"][0]["templates"] = [GREETING]
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=app, counts={"web": 2, "lb": 0}, channel=channel
    )
    await expect(service, cluster.id, "active")
    nodes = await service.nodes(cluster.id)
    assert len(nodes) == 2
    for node in nodes:
        assert cloud.vm_file(node.instance_id, GREETING["dest"]) == f"{node.instance_id} says hello\n"
        rendered = cloud.workdir / "sim" / "vms" / node.instance_id / "root" / GREETING["dest"].lstrip("/")
        assert stat.S_IMODE(rendered.stat().st_mode) == 0o640

    # update_env ends when every node reports the new revision applied: the file is rendered by then.
    await service.update_env(cluster.id, {"web": {"greeting": "bonjour"}})
    await expect(service, cluster.id, "active")
    for node in nodes:
        assert cloud.vm_file(node.instance_id, GREETING["dest"]) == f"{node.instance_id} says bonjour\n"

    await service.delete_cluster(cluster.id)
    await expect(service, cluster.id, "deleted")
    assert await cloud.live_names() == []
