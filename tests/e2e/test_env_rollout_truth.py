"""An env change to a template reading the role's ``/env/<key>`` (AppCenter's usual layout).

Before, the canary and batches only moved ``/host/env``, so a template reading ``/env/<key>``
saw nothing until ``commit-env`` wrote the role's env to every node at once, and the job ended
``successful`` while every node reported ``check_cmd failed``. Now each batch gets the new values
in its own ``/self/env`` first (a staged copy metad shows that node only), gated on the applied
revision and on health, and a failure puts the touched nodes back and fails the job.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_cloud import Cloud, demo_app
from test_lifecycle import expect
from test_update_env import steps_by_name

pytestmark = pytest.mark.e2e

MODE = {
    "name": "mode",
    "dest": "/etc/app/mode.conf",
    "keys": ["/env"],
    "text": 'mode={{getv "/env/mode"}} secret={{getv "/env/secret"}}\n',
    # the node refuses a config naming a broken mode: the agent keeps the old file and reports it
    "check_cmd": "! grep -q 'mode=broken' {{.src}}",
}


def env_app() -> dict[str, Any]:
    app = demo_app()
    web = app["roles"][0]
    web["env"]["mode"] = {"type": "string", "default": "fast"}
    web["env"]["secret"] = {"type": "password", "default": "s3cret"}
    web["templates"] = [MODE]
    # the node is sick with mode=sick: its config applies, but its health check fails
    web["health_check"] = {
        "cmd": "! grep -q 'mode=sick' etc/app/mode.conf",
        "interval": 1,
        "timeout": 5,
        "unhealthy_threshold": 1,
    }
    return app


async def files(cloud: Cloud, cid: str) -> dict[str, str]:
    return {
        n.node_id: cloud.vm_file(n.instance_id, MODE["dest"]).strip()
        for n in await cloud.service.nodes(cid)
        if n.role == "web"
    }


async def test_env_layout_rollout_is_gated_and_a_bad_value_rolls_back(cloud: Cloud) -> None:
    service = cloud.service
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=env_app(), counts={"web": 3, "lb": 0}
    )
    cid = cluster.id
    await expect(service, cid, "active")
    assert set((await files(cloud, cid)).values()) == {"mode=fast secret=s3cret"}

    # a good change (a password too) reaches every node, canary first
    job = await service.update_env(cid, {"web": {"mode": "safe", "secret": "n3w"}})
    await expect(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "successful"
    assert set((await files(cloud, cid)).values()) == {"mode=safe secret=n3w"}
    steps = steps_by_name(await service.job_steps(cid, job.id))
    assert list(steps) == ["metadata", "canary", "batch-2", "commit-env"]

    # a value each node's check refuses: the canary fails, is put back, the job fails, nothing else moved
    job = await service.update_env(cid, {"web": {"mode": "broken"}})
    after = await expect(service, cid, "active")
    failed = await service.get_job(cid, job.id)
    assert failed.status == "failed", failed
    assert after.last_error is not None and "web-1" in after.last_error, after.last_error
    assert "check_cmd" in after.last_error and "previous values restored" in after.last_error
    steps = steps_by_name(await service.job_steps(cid, job.id))
    assert steps["canary"].status == "failed" and "batch-2" not in steps and "commit-env" not in steps
    assert set((await files(cloud, cid)).values()) == {"mode=safe secret=n3w"}
    assert after.env["web"]["mode"] == "safe"

    # a value that applies cleanly but breaks the canary's health: put back, job failed
    job = await service.update_env(cid, {"web": {"mode": "sick"}})
    after = await expect(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "failed"
    assert after.last_error is not None and "web-1: unhealthy after the change" in after.last_error
    assert "previous values restored" in after.last_error, after.last_error
    steps = steps_by_name(await service.job_steps(cid, job.id))
    assert steps["canary"].status == "failed" and "batch-2" not in steps
    assert set((await files(cloud, cid)).values()) == {"mode=safe secret=n3w"}

    # the cluster stays usable
    await service.update_env(cid, {"web": {"mode": "slow"}})
    await expect(service, cid, "active")
    assert set((await files(cloud, cid)).values()) == {"mode=slow secret=n3w"}
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
