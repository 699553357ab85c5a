"""Fixtures for metad: a served Metad over the test's store, and HTTP clients acting as instances.

Each test gets its own 127.101.x.y /24-ish block so instance addresses never collide between
tests run in parallel; a client "is" an instance by binding its socket to that instance's address.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd

from .tlsworld import TLSWorld, start_world


class Net:
    """Addresses of one test: ``ip(n)`` is the n-th instance address, ``metad_ip`` metad's own."""

    def __init__(self, block: int) -> None:
        self.block = block % 250 + 1
        self.metad_ip = f"127.101.{self.block}.1"

    def ip(self, n: int) -> str:
        return f"127.101.{self.block}.{n + 10}"


@pytest.fixture(scope="session")
def address_blocks() -> Iterator[int]:
    """Per-session sequence of /24 blocks, starting at a pid-derived offset so parallel runs differ."""
    return itertools.count(random.Random(os.getpid()).randrange(0, 200))


@pytest.fixture
def net(address_blocks: Iterator[int]) -> Net:
    return Net(next(address_blocks))


@pytest.fixture
async def private_store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store on an etcd of this test's own, for what would disturb the shared one (compaction)."""
    etcd = EmbeddedEtcd(tmp_path / "private-etcd", unsafe_no_fsync=True)
    url = await etcd.start()
    store = await Store.connect([url], tls=etcd.client_tls)
    try:
        yield store
    finally:
        await store.close()
        await etcd.stop()


@pytest.fixture
async def metad(store: Store, net: Net) -> AsyncIterator[Metad]:
    server = Metad(store, net.metad_ip, 0, 0, wait_timeout=30.0, keepalive=0.3)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def manage(metad: Metad) -> AsyncIterator[MetadManagementClient]:
    client = MetadManagementClient(metad.manage_url, idle_timeout=5.0)
    try:
        yield client
    finally:
        await client.close()


class Instances:
    """One aiohttp session per instance address, closed at the end of the test."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.sessions: dict[str, aiohttp.ClientSession] = {}

    def session(self, ip: str) -> aiohttp.ClientSession:
        if ip not in self.sessions:
            connector = aiohttp.TCPConnector(local_addr=(ip, 0), limit=0)
            self.sessions[ip] = aiohttp.ClientSession(connector=connector)
        return self.sessions[ip]

    async def get(self, ip: str, path: str, **params: Any) -> tuple[int, Any, dict[str, str]]:
        # JSON unless told: without an Accept metad answers in its text format, as Go metad does.
        headers = {"Accept": params.pop("accept", "application/json")}
        query = {k: str(v) for k, v in params.items()}
        async with self.session(ip).get(self.base_url + path, params=query, headers=headers) as response:
            text = await response.text()
            body: Any = text
            if response.content_type == "application/json":
                body = await response.json()
            return response.status, body, dict(response.headers)

    async def put(self, ip: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (b"" if body is None else __import__("json").dumps(body).encode())
        headers = {"Accept": "application/json"}
        async with self.session(ip).put(self.base_url + path, data=data, headers=headers) as response:
            return response.status, await response.json()

    async def close(self) -> None:
        for session in self.sessions.values():
            await session.close()


@pytest.fixture
async def instances(metad: Metad) -> AsyncIterator[Instances]:
    pool = Instances(metad.instance_url)
    try:
        yield pool
    finally:
        await pool.close()


def cluster_doc(cid: str, owner: str, hosts: dict[str, dict[str, str]]) -> dict[str, Any]:
    """A cluster's metadata as pitrixd registers it; ``hosts`` maps iid → {role, ip}."""
    by_role: dict[str, dict[str, Any]] = {}
    for node, (iid, host) in enumerate(sorted(hosts.items()), start=1):
        by_role.setdefault(host["role"], {})[iid] = {
            "instance_id": iid,
            "ip": host["ip"],
            "role": host["role"],
            "node_id": f"{cid}-{node}",
            "sid": str(node),
            "cpu": 1,
            "memory": 1024,
        }
    return {
        "cluster": {"cluster_id": cid, "app_id": "app-demo", "owner": owner, "zone": "sim1"},
        "hosts": by_role,
        "endpoints": {"http": {"port": 8000, "protocol": "tcp"}},
    }


Seeder = Callable[..., Any]


async def seed_world(manage: MetadManagementClient, net: Net, web_count: int = 2) -> dict[str, Any]:
    """Register the standard fixture world: c1 (web×2, db×1, links to c2 and foreign c3), c2, c3."""
    c1_hosts = {f"i-web{n}": {"role": "web", "ip": net.ip(n)} for n in range(1, web_count + 1)}
    c1_hosts["i-db1"] = {"role": "db", "ip": net.ip(200)}
    doc = cluster_doc("c1", "usr-a", c1_hosts)
    hosts = doc.pop("hosts")
    doc["env"] = {"web": {"port": 80, "workers": 4}, "db": {"max_conn": 100}}
    doc["cmd"] = {"i-web1": {"id": "cmd-1", "cmd": "opt/app/bin/init", "timeout": 60}}
    doc["links"] = {"store": "c2", "foreign": "c3"}
    await manage.post_data("/clusters/c1", doc)
    # Hosts go in per host: etcd caps a transaction at 128 operations by default.
    for role, members in hosts.items():
        for iid, fields in members.items():
            await manage.put_data(f"/clusters/c1/hosts/{role}/{iid}", fields)
    await manage.post_data(
        "/clusters/c2", cluster_doc("c2", "usr-a", {"i-s1": {"role": "s", "ip": net.ip(201)}})
    )
    await manage.post_data(
        "/clusters/c3", cluster_doc("c3", "usr-b", {"i-x1": {"role": "x", "ip": net.ip(202)}})
    )
    for iid, host in c1_hosts.items():
        await manage.put_mapping(iid, {"cluster_id": "c1", "role": host["role"], "ip": host["ip"]})
    return {"hosts": c1_hosts}


@pytest.fixture
def seed(manage: MetadManagementClient, net: Net) -> Seeder:
    async def _seed(web_count: int = 2) -> dict[str, Any]:
        return await seed_world(manage, net, web_count)

    return _seed


@pytest.fixture
async def tls_world(
    store: Store, net: Net, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[TLSWorld]:
    """A mutual-TLS metad over the seeded world, with certificates for i-web1, i-web2, i-db1 and i-x1.

    Parametrized indirectly, the parameter is metad's renewal grace in seconds.
    """
    grace = float(getattr(request, "param", 60.0))
    world = await start_world(store, net.metad_ip, tmp_path / "pki", renewal_grace=grace)
    try:
        await seed_world(world.manage, net)
        await world.manage.put_mapping("i-x1", {"cluster_id": "c3", "role": "x", "ip": net.ip(202)})
        for iid, owner, cid in (
            ("i-web1", "usr-a", "c1"),
            ("i-web2", "usr-a", "c1"),
            ("i-db1", "usr-a", "c1"),
        ):
            world.save(iid, world.ca.issue_instance(iid, owner, cid))
        world.save("i-x1", world.ca.issue_instance("i-x1", "usr-b", "c3"))
        yield world
    finally:
        await world.close()
        await world.metad.stop()
