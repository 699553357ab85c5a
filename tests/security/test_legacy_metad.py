"""Finding 8: metad in legacy source-IP mode keeps its management API from the instances.

``pitrix-metad --legacy-source-ip --trusted-proxy P`` identifies instances by address, so whoever
holds an instance's address is that instance; the management API must then answer only the
runtime (its certificate), or not listen where instances reach it. From an instance's address:
reading another cluster's data and remapping another instance onto a stranger's address are both
refused, and the stranger never reads the victim's ``/self``. X-Forwarded-For counts only from the
trusted proxy.

A standalone metad over the session's test etcd, seeded in etcd directly (the layout metad reads),
so the seeding does not depend on how the fixed management API authenticates. One metad per test
(a second each): a remapping that gets through must not decide the next case.
"""

from __future__ import annotations

import json
import random
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pitrix.cli.demo import Child, _bin, start_child, stop_child
from pitrix.metad import data, keyspace
from pitrix.store import Store
from pitrix.store.tls import EtcdTLS

from .deployment import assert_refused, attempt, child_env

pytestmark = pytest.mark.e2e

MARKER = f"victim-secret-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Legacy:
    ip: str  # metad's listen address
    instance_port: int
    manage_port: int
    proxy: str
    attacker: str  # i-a1's address (cluster c-a)
    victim: str  # i-b1's address (cluster c-b, another owner)
    stranger: str  # mapped to nothing

    def instance(self, path: str) -> str:
        return f"http://{self.ip}:{self.instance_port}{path}"

    def manage(self, path: str) -> str:
        return f"http://{self.ip}:{self.manage_port}{path}"


def _free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _cluster(cid: str, owner: str, iid: str, ip: str, env: dict[str, Any]) -> dict[str, Any]:
    host = {"instance_id": iid, "ip": ip, "role": "web", "node_id": f"{cid}-1", "sid": "1"}
    return {
        "cluster": {"cluster_id": cid, "app_id": "app-demo", "owner": owner},
        "hosts": {"web": {iid: host}},
        "env": {"web": env},
    }


async def _seed(store: Store, attacker: str, victim: str) -> None:
    docs = {
        "/clusters/c-a": _cluster("c-a", "usr-a", "i-a1", attacker, {"note": "attacker"}),
        "/clusters/c-b": _cluster("c-b", "usr-b", "i-b1", victim, {"password": MARKER}),
        keyspace.mapping("i-a1"): {"instance_id": "i-a1", "cluster_id": "c-a", "role": "web", "ip": attacker},
        keyspace.mapping("i-b1"): {"instance_id": "i-b1", "cluster_id": "c-b", "role": "web", "ip": victim},
    }
    for path, doc in docs.items():
        await store.txn([], data.replace_ops([], path, doc))


@pytest.fixture
async def legacy(
    etcd_url: str, etcd_tls: EtcdTLS, metad_etcd_args: list[str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Legacy]:
    block = f"127.{random.randint(101, 254)}.{random.randint(0, 255)}"
    ip = f"{block}.1"
    prefix = f"/security-{uuid.uuid4().hex}"
    store = await Store.connect([etcd_url], prefix=prefix, tls=etcd_tls)
    workdir: Path = tmp_path_factory.mktemp("legacy-metad")
    child: Child | None = None
    try:
        world = Legacy(
            ip=ip,
            instance_port=_free_port(ip),
            manage_port=_free_port(ip),
            proxy=f"{block}.250",
            attacker=f"{block}.11",
            victim=f"{block}.12",
            stranger=f"{block}.13",
        )
        await _seed(store, world.attacker, world.victim)
        argv = [
            _bin("pitrix-metad"),
            "--listen-ip", ip,
            "--instance-port", str(world.instance_port),
            "--manage-port", str(world.manage_port),
            *metad_etcd_args,
            "--prefix", prefix,
            "--legacy-source-ip",
            "--trusted-proxy", world.proxy,
        ]  # fmt: skip
        child = await start_child("pitrix-metad", argv, workdir / "metad.log", child_env())
        yield world
    finally:
        if child is not None:
            await stop_child(child)
        await store.delete_prefix("")
        await store.close()


async def test_legacy_instance_cannot_read_another_clusters_data(legacy: Legacy) -> None:
    for path in ("/v1/data/clusters/c-b", "/v1/data/clusters", "/v1/data/", "/v1/mapping/i-b1", "/v1/watch"):
        outcome = await attempt(legacy.attacker, "GET", legacy.manage(path), timeout=5.0)
        assert_refused(outcome, f"legacy management GET {path} from an instance", (MARKER, legacy.victim))


async def test_legacy_instance_cannot_remap_another_instance(legacy: Legacy) -> None:
    body = json.dumps({"instance_id": "i-b1", "cluster_id": "c-b", "role": "web", "ip": legacy.stranger})
    outcome = await attempt(
        legacy.attacker,
        "PUT",
        legacy.manage("/v1/mapping/i-b1"),
        body=body,
        headers={"Content-Type": "application/json"},
    )
    assert_refused(outcome, "legacy management PUT /v1/mapping/i-b1 from an instance")
    for method, path in (
        ("PUT", "/v1/data/clusters/c-b/env/web/password"),
        ("DELETE", "/v1/data/clusters/c-b"),
    ):
        outcome = await attempt(
            legacy.attacker,
            method,
            legacy.manage(path),
            body='"pwned"',
            headers={"Content-Type": "application/json"},
        )
        assert_refused(outcome, f"legacy management {method} {path} from an instance")
    seen = await attempt(
        legacy.stranger, "GET", legacy.instance("/self"), headers={"Accept": "application/json"}
    )
    assert_refused(seen, "the stranger's /self after the remapping attempt", (MARKER,))


async def test_legacy_forwarded_for_counts_only_from_the_trusted_proxy(legacy: Legacy) -> None:
    spoof = {"Accept": "application/json", "X-Forwarded-For": legacy.victim}
    for source in (legacy.stranger, legacy.attacker):
        outcome = await attempt(source, "GET", legacy.instance("/self"), headers=spoof)
        if source == legacy.attacker and not isinstance(outcome, Exception) and outcome.status == 200:
            assert MARKER not in outcome.text and "c-a" in outcome.text, outcome.text[:300]
        else:
            assert_refused(outcome, f"X-Forwarded-For of the victim from {source}", (MARKER,))


async def test_legacy_instances_and_the_proxy_still_read_their_own(legacy: Legacy) -> None:
    """The control: the victim itself, and the trusted proxy on its behalf, read the victim's view."""
    for source, headers in ((legacy.victim, {}), (legacy.proxy, {"X-Forwarded-For": legacy.victim})):
        outcome = await attempt(
            source, "GET", legacy.instance("/self"), headers={"Accept": "application/json", **headers}
        )
        assert not isinstance(outcome, Exception), outcome
        assert outcome.status == 200 and MARKER in outcome.text, outcome.text[:300]
