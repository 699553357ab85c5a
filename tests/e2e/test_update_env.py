"""update_env on the simulator with the demo app: validation, canary then batches, and a rollback.

The web role's ``greeting`` parameter is rendered by each node's agent into web.conf (checked by
the image's ``check-web`` before it replaces the live file, then reloaded); every web answer ends
with it, so the test reads what each node serves.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from e2e_cloud import Cloud, demo_app
from test_lifecycle import expect

from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.records import Cluster
from pitrix.runtime.service import InvalidRequest, RuntimeService

pytestmark = pytest.mark.e2e


async def greetings(http: aiohttp.ClientSession, service: RuntimeService, cid: str) -> dict[str, str]:
    """What each web node answers after its node id and instance id."""
    seen = {}
    for node in await service.nodes(cid):
        if node.role == "web":
            async with http.get(f"http://{node.ip}:8000/") as response:
                seen[node.node_id] = (await response.text()).strip().split(" ", 2)[2]
    return seen


def app_with_params() -> dict[str, Any]:
    app = demo_app()
    web = app["roles"][0]
    web["env"]["workers"] = {"type": "integer", "default": 2, "min": 1, "max": 8}
    web["env"]["edition"] = {"default": "community", "changeable": False}
    return app


BAD_ENV = [
    ({"db": {"greeting": "x"}}, "env.db: the app has no role 'db'"),
    ({"web": {"colour": "red"}}, "env.web.colour: role web has no parameter 'colour'"),
    ({"web": {"edition": "pro"}}, "env.web.edition: is not changeable"),
    ({"web": {"workers": "many"}}, "env.web.workers: expected an integer"),
    ({"web": {"workers": 9}}, "env.web.workers: 9 is above the maximum 8"),
    ({"web": "loud"}, "env.web: expected an object"),
    ({}, "env: expected an object"),
    ({"web": {"greeting": "hello"}}, "env: every value given is already the current one"),
]


async def test_bad_env_is_refused_naming_the_field(cloud: Cloud) -> None:
    """Each refusal names the field and changes nothing: no job, no state change, no env."""
    service = cloud.service
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=app_with_params(), counts={"web": 1, "lb": 0}
    )
    await expect(service, cluster.id, "active")
    for env, message in BAD_ENV:
        with pytest.raises(InvalidRequest) as caught:
            await service.update_env(cluster.id, env)
        assert str(caught.value).startswith(message), str(caught.value)
        after = await service.get_cluster(cluster.id)
        assert (after.state, after.job_id, after.env) == ("active", cluster.job_id, {})
    await service.stop_cluster(cluster.id)
    await expect(service, cluster.id, "stopped")
    with pytest.raises(LifecycleError, match="cannot update env a cluster that is stopped"):
        await service.update_env(cluster.id, {"web": {"greeting": "hi"}})
    await service.delete_cluster(cluster.id)
    await expect(service, cluster.id, "deleted")


def steps_by_name(steps: list[Any]) -> dict[str, Any]:
    return {s.name: s for s in steps}


async def test_rollout_by_canary_and_batches_and_a_failing_canary_rolls_back(cloud: Cloud) -> None:
    service, http = cloud.service, cloud.http
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=app_with_params(), counts={"web": 3, "lb": 1}
    )
    cid = cluster.id
    await expect(service, cid, "active")
    assert await greetings(http, service, cid) == {"web-1": "hello", "web-2": "hello", "web-3": "hello"}

    job = await service.update_env(cid, {"web": {"greeting": "bonjour tout le monde", "workers": "4"}})
    done: Cluster = await expect(service, cid, "active")
    assert done.env == {"web": {"greeting": "bonjour tout le monde", "workers": "4"}}
    assert await greetings(http, service, cid) == dict.fromkeys(
        ("web-1", "web-2", "web-3"), "bonjour tout le monde"
    )
    steps = steps_by_name(await service.job_steps(cid, job.id))
    assert list(steps) == ["metadata", "canary", "batch-2", "commit-env"]
    assert steps["canary"].finished <= steps["batch-2"].started
    assert "web-1 applied" in steps["canary"].detail and "web-2, web-3 applied" in steps["batch-2"].detail
    web1 = next(n for n in await service.nodes(cid) if n.node_id == "web-1")
    assert "greeting=bonjour tout le monde" in cloud.vm_file(web1.instance_id, "/etc/demo/web.conf")

    # a value the spec allows but the node's check refuses: the canary fails and is put back
    job = await service.update_env(cid, {"web": {"greeting": "<b>hi</b>"}})
    after = await expect(service, cid, "active")
    failed = await service.get_job(cid, job.id)
    assert failed.status == "failed"
    assert (
        after.last_error is not None
        and "web-1" in after.last_error
        and "previous values restored" in after.last_error
    )
    assert after.env == done.env
    steps = steps_by_name(await service.job_steps(cid, job.id))
    assert steps["canary"].status == "failed" and "batch-2" not in steps
    assert await greetings(http, service, cid) == dict.fromkeys(
        ("web-1", "web-2", "web-3"), "bonjour tout le monde"
    )

    # the cluster stays usable: the next update goes through
    await service.update_env(cid, {"web": {"greeting": "hola"}})
    await expect(service, cid, "active")
    assert set((await greetings(http, service, cid)).values()) == {"hola"}
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
