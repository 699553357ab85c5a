"""The long form over every face of the simulator (``make chaos``, ``CHAOS_LONG=1``): the demo's
cluster, the etcd example and the crash test on QingCloud, OpenStack and EC2.

Each face is only a different provider over the same kind of VMs, so what is shown on one must
hold on all: the demo's lb answers and follows a scale-out, the etcd example's members agree on
one membership and keep a write, and a pitrixd SIGKILLed at cloud calls leaves no VM leaked or
made twice. (The crash test on QingCloud is ``test_crash`` itself, in ``make test``.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_cloud import Cloud, demo_app, simulated_cloud
from e2e_daemons import duplicated_names, live
from etcd_http import EtcdHttp, eventually
from test_cloud_faces import FACES
from test_crash import CASES, World, world_with
from test_crash import test_killed_daemon_resumes_every_action as one_life_with_kills
from test_etcd_cluster import PACKAGE, assert_members_are_the_nodes, etcd_app, etcd_nodes
from test_lifecycle import expect, lb_ip, through_lb

from pitrix.cli.demo import Child
from pitrix.store import Store

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.chaos,
    pytest.mark.long_form,  # deselected unless CHAOS_LONG=1 (make chaos): tests/conftest.py
]


def as_sim(face: str) -> Callable[[Child], dict[str, Any]]:
    """The face's runtime under the name the shared tests use ("sim"), with one metadata VM."""

    def runtime(sim: Child) -> dict[str, Any]:
        return {**FACES[face](sim), "name": "sim", "metadata_size": 1}

    return runtime


@pytest.fixture(params=list(FACES))
async def cloud(request: pytest.FixtureRequest, store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    images = str(PACKAGE / "images")
    async with simulated_cloud(
        store, tmp_path, "--images-dir", images, runtime=as_sim(request.param)
    ) as simulated:
        yield simulated


async def assert_clean(cloud: Cloud, cid: str) -> None:
    ledger = await cloud.ledger()
    assert not any(cid in vm["name"] for vm in live(ledger)), live(ledger)
    assert duplicated_names(ledger) == {}


async def test_demo_cluster_on_each_face(cloud: Cloud) -> None:
    service = cloud.service
    cluster, _ = await service.create_cluster(
        owner="o1", runtime="sim", app=demo_app(), counts={"web": 2, "lb": 1}
    )
    cid = cluster.id
    await expect(service, cid, "active")
    await service.scale(cid, "web", 3)
    await expect(service, cid, "active")
    nodes = await service.nodes(cid)
    assert len([n for n in nodes if n.role == "web"]) == 3
    ip = await lb_ip(service, cid)

    async def every_web_answered() -> bool:  # the lb's upstreams follow the scale-out
        return set(await through_lb(cloud.http, ip)) == {"web-1", "web-2", "web-3"}

    await eventually("answers from the three web nodes through the lb", every_web_answered, 60)
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    await assert_clean(cloud, cid)


async def test_etcd_example_on_each_face(cloud: Cloud) -> None:
    service, etcd = cloud.service, EtcdHttp(cloud.http)
    cluster, _ = await service.create_cluster(owner="o1", runtime="sim", app=etcd_app())
    cid = cluster.id
    await expect(service, cid, "active")
    nodes = await etcd_nodes(cloud, cid)
    await assert_members_are_the_nodes(etcd, nodes)
    await etcd.put(nodes[0].ip, "faces/kept", "yes")
    assert await etcd.get(nodes[-1].ip, "faces/kept") == "yes"
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    await assert_clean(cloud, cid)


@pytest.fixture(params=[f for f in FACES if f != "qingcloud"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """test_crash's world (a simulator, a real pitrixd) with its runtime on another face."""
    async with world_with(tmp_path, as_sim(request.param)) as built:
        yield built


async def test_killed_daemon_resumes_on_each_face(world: World) -> None:
    await one_life_with_kills(world, CASES["cloud-calls-and-services"])
