"""Deploy-time parameters on the simulator: values given at create reach the nodes' ``/self/env``
(cluster-level ones on every role, a role's own key winning), a password among them only there:
never in the API's answers, its event stream, or pitrixd's output. Then a cluster-level change."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from e2e_cloud import Cloud, demo_app
from test_lifecycle import expect

from pitrix.api.app import create_app
from pitrix.runtime.params import CLUSTER_SCOPE
from pitrix.runtime.service import InvalidRequest
from pitrix.sealing import is_sealed

pytestmark = pytest.mark.e2e

SECRET = "Deploy-Time-Pw-5c0ffee"
NEW_SECRET = "Rotated-Pw-0b57ac1e"
RENDERED = "/etc/app/params.conf"


def params_app() -> dict[str, Any]:
    app = demo_app()
    app["env"] = {
        "admin_password": {"type": "password", "required": True, "pattern": "[A-Za-z0-9-]{12,}"},
        "region": {"type": "string", "default": "eu", "pattern": "[a-z]{2}"},
        "codecs": {"type": "string", "multichoice": True, "range": ["gzip", "zstd", "br"], "default": "gzip"},
    }
    web, lb = app["roles"]
    web["env"]["region"] = {"type": "string", "default": "web-own"}  # the role's own key wins
    web["env"]["seed"] = {"type": "string", "changeable": False, "required": True}
    text = (
        'pw={{getv "/env/admin_password"}} region={{getv "/env/region"}} '
        'codecs={{getv "/env/codecs"}} seed={{getv "/env/seed" "-"}}\n'
    )
    for role in (web, lb):
        role["templates"] = [{"name": "params", "dest": RENDERED, "keys": ["/env"], "text": text}]
    return app


async def rendered(cloud: Cloud, instance_id: str, want: str, within: float = 30.0) -> str:
    """The node's rendered file once it reads ``want`` (its agent renders on a metadata change)."""
    deadline = time.monotonic() + within
    seen = ""
    while time.monotonic() < deadline:
        try:
            seen = cloud.vm_file(instance_id, RENDERED)
        except FileNotFoundError:
            seen = ""
        if seen == want:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"{instance_id}: {RENDERED} reads {seen!r}, not {want!r}")


async def test_deploy_time_env_reaches_the_nodes_and_the_password_nothing_else(
    cloud: Cloud, capfd: pytest.CaptureFixture[str]
) -> None:
    service = cloud.service
    api = TestClient(TestServer(create_app(service), host="127.0.0.1"))
    await api.start_server()
    events = await api.get("/v1/events")
    seen: list[bytes] = []

    async def follow() -> None:
        async for chunk in events.content.iter_any():
            seen.append(chunk)

    following = asyncio.create_task(follow())
    try:
        # changeable: false values may be set at create (and only then)
        env = {"admin_password": SECRET, "codecs": "zstd,gzip", "web": {"seed": "s-1"}}
        body = {"runtime": "sim", "app": params_app(), "counts": {"web": 1, "lb": 1}, "env": env}
        response = await api.post("/v1/clusters", json=body)
        answer = await response.text()
        assert response.status == 202, answer
        cid = json.loads(answer)["cluster"]["id"]
        await expect(service, cid, "active")
        nodes = {n.role: n for n in await service.nodes(cid)}
        web, lb = nodes["web"].instance_id, nodes["lb"].instance_id
        assert cloud.vm_file(web, RENDERED) == f"pw={SECRET} region=web-own codecs=zstd,gzip seed=s-1\n"
        assert cloud.vm_file(lb, RENDERED) == f"pw={SECRET} region=eu codecs=zstd,gzip seed=-\n"

        with pytest.raises(InvalidRequest, match=r"env\.web\.seed: is not changeable"):
            await service.update_env(cid, {"web": {"seed": "s-2"}})
        # a cluster-level change reaches every role without its own key of that name
        await service.update_env(cid, {"region": "us", "admin_password": NEW_SECRET})
        after = await expect(service, cid, "active")
        assert after.env[CLUSTER_SCOPE]["region"] == "us"
        assert is_sealed(after.env[CLUSTER_SCOPE]["admin_password"])
        await rendered(cloud, lb, f"pw={NEW_SECRET} region=us codecs=zstd,gzip seed=-\n")
        await rendered(cloud, web, f"pw={NEW_SECRET} region=web-own codecs=zstd,gzip seed=s-1\n")

        answers = [answer]
        for path in (f"/v1/clusters/{cid}", "/v1/clusters", f"/v1/clusters/{cid}/jobs"):
            answers.append(await (await api.get(path)).text())
        for job in json.loads(answers[-1])["jobs"]:
            answers.append(await (await api.get(f"/v1/clusters/{cid}/jobs/{job['id']}")).text())
        shown = json.loads(answers[1])
        assert shown["env"]["admin_password"] == "******" and shown["env"]["region"] == "us"
        await service.delete_cluster(cid)
        await expect(service, cid, "deleted")
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        events.close()
        await api.close()
    stream = b"".join(seen).decode()
    assert cid in stream  # the stream did follow the cluster
    output = capfd.readouterr()
    for secret in (SECRET, NEW_SECRET):
        for where, text in (
            ("answers", "\n".join(answers)),
            ("events", stream),
            ("output", output.out + output.err),
        ):
            assert secret not in text, f"the password is in the {where}"
