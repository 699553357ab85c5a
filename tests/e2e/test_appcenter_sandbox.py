"""An AppCenter-style package of ours (tests/e2e/appcenter_sandbox) on sandboxed simulator VMs.

Its image is built from the package's own files by :mod:`simulator.appcenter_image` (as
``scripts/appcenter-image`` does) and runs sandboxed: the VM's processes see its root as ``/``.
One cluster, one node then two, then deleted:

- create: the image's own confd resource (``/etc/confd``) renders a generated script into
  ``/opt/app/bin``, the start service runs it and starts a unit through the ``systemctl`` shim as
  another user; the web server it starts answers from inside the sandbox (its ``/`` is the VM
  root, its host name the instance id), and nothing was written to the host's ``/opt``; a
  second unit, masked in the image (as the packages' builds leave theirs) and unmasked by the
  first start, runs the ``caddy`` shim as an account the image recipe added, serving the
  generated Caddy 1 file: basic auth, a browsable folder, a file its user reads only through the
  supplementary group the recipe gave it;
- scale to two: the template re-renders on the first node and its reload restarts the unit, so
  both answer with both addresses (both listen on 0.0.0.0:8080, which each VM's address library
  turns into its own address); ``curl http://metadata/self/host/ip`` (plain-HTTP metadata,
  when the agent serves it) answers each node its own address;
- reserved IPs: the create reserves the app's VIP through the simulator's QingCloud API before
  booting, the node's template reads it at ``/cluster/endpoints/reserved_ips/vip/value``, and the
  delete gives it back (the cloud shows no VIP of the cluster's name afterwards);
- delete: every process of both VMs is gone, those running as another user included.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from e2e_cloud import Cloud, simulated_cloud
from e2e_daemons import runtime_definition
from redis_client import eventually
from test_lifecycle import expect

from pitrix.providers.addresses import Address
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.store import Store
from simulator.appcenter_image import ImageRecipe, build_image
from simulator.processes import vm_pids

HERE = Path(__file__).resolve().parent / "appcenter_sandbox"
PORT = 8080
FILES_PORT = 8081  # the caddy shim's site

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not (Path("/usr/bin/python3").exists() and shutil.which("curl") and shutil.which("nsenter")),
        reason="Debian's python3, curl and util-linux are needed in the sandbox (scripts/system-deps.sh)",
    ),
]


@pytest.fixture
async def cloud(store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    images = tmp_path / "images"
    recipe = ImageRecipe(
        package=HERE / "package",
        name="sbxapp",
        shims=["caddy"],
        users=["sbxsvc:sbxgrp"],
        links={"/etc/systemd/system/sbxfiles.service": "/dev/null"},  # masked until set up
    )
    build_image(recipe, images)
    async with simulated_cloud(store, tmp_path, "--images-dir", str(images)) as simulated:
        yield simulated


async def answer(http: aiohttp.ClientSession, ip: str) -> dict[str, Any]:
    async with http.get(f"http://{ip}:{PORT}/") as response:
        assert response.status == 200
        body: dict[str, Any] = json.loads(await response.text())
        return body


async def test_appcenter_package_runs_sandboxed(cloud: Cloud) -> None:
    service = cloud.service
    app = yaml.safe_load((HERE / "app.yaml").read_text())
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=app)
    cid = cluster.id
    await expect(service, cid, "active")
    (node,) = await service.nodes(cid)
    first = await answer(cloud.http, node.ip)
    assert first["ip"] == node.ip and first["node"] == node.node_id and first["peers"] == [node.ip]
    assert first["hostname"] == node.instance_id  # its own UTS namespace, named as QingCloud names it
    assert first["uid"] != 0  # User= in the unit, honoured by the shim
    assert "opt" in first["root"] and "proc" in first["root"]
    assert cloud.vm_file(node.instance_id, "opt/app/conf/web.env").startswith(f"MY_IP={node.ip}\n")
    assert not on_host("/opt/app/conf/web.env")  # written inside the VM, not on the host
    joined = cloud.vm_file(node.instance_id, "opt/app/bin/node.sh")
    assert "mv /opt/app/conf/web.env.new" in joined  # the template parts, in order
    await files_viewer_serves(cloud, node.ip, node.node_id)
    mask = cloud.workdir / "sim/vms" / node.instance_id / "root/etc/systemd/system/sbxfiles.service"
    assert not await asyncio.to_thread(os.path.lexists, mask)  # unmasked by the first start, as systemd would
    vip = await reserved_vip(cloud, cid)
    assert vip is not None and vip.address != node.ip
    assert f"\nVIP={vip.address}\n" in cloud.vm_file(node.instance_id, "opt/app/conf/web.env")

    job = await service.scale(cid, "app_node", 2)
    await expect(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "successful"
    nodes = await service.nodes(cid)
    ips = sorted(n.ip for n in nodes)

    async def both_know_both() -> bool | None:  # re-rendered, and restarted by the shim
        seen = [(await answer(cloud.http, n.ip))["peers"] for n in nodes]
        return True if all(peers == ips for peers in seen) else None

    await eventually(both_know_both, 60, f"both nodes serving peers {ips}")

    if importlib.util.find_spec("pitrix.agent.metadata_proxy") is not None:
        job = await service.act(cid, "service", {"name": "whoami"})
        await expect(service, cid, "active")
        done = await service.get_job(cid, job.id)
        assert done.status == "successful", done.error
        for n in nodes:
            assert done.results[n.node_id]["output_tail"].strip() == n.ip

    instance_ids = {n.instance_id for n in nodes}
    assert vm_pids(instance_ids)
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    assert await cloud.live_names() == []
    assert await reserved_vip(cloud, cid) is None  # released with the cluster
    assert not vm_pids(instance_ids)
    for n in nodes:
        with pytest.raises(aiohttp.ClientConnectionError):
            await answer(cloud.http, n.ip)


async def files_viewer_serves(cloud: Cloud, ip: str, password: str) -> None:
    base = f"http://{ip}:{FILES_PORT}"
    async with cloud.http.get(f"{base}/logs/") as response:
        assert response.status == 401
    auth = {"Authorization": "Basic " + base64.b64encode(f"viewer:{password}".encode()).decode()}
    async with cloud.http.get(f"{base}/logs/", headers=auth) as response:
        assert response.status == 200 and 'href="node.log"' in await response.text()
    async with cloud.http.get(f"{base}/logs/node.log", headers=auth) as response:
        assert (response.status, await response.text()) == (200, "a node log\n")  # via sbxgrp


async def reserved_vip(cloud: Cloud, cid: str) -> Address | None:
    """The cluster's VIP named ``vip`` as the simulator's QingCloud API shows it."""
    provider = QingCloudProvider.from_runtime(runtime_definition(cloud.sim))
    try:
        return await provider.find_address(f"{cid}-vip-vip", "")
    finally:
        await provider.close()


def on_host(path: str) -> bool:
    """Whether the host's own file system has ``path`` (a sandboxed VM's writes must not land there)."""
    return os.path.exists(path)
