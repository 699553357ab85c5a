"""A single-member embedded etcd moved to the peers' mutual TLS through metad's management API
(``/v1/etcd/peer-setup``): bad input is a 400 naming the field with nothing changed; a good one
restarts the etcd as member ``m0`` with its data, publishes the issuer, and is kept for the next
start. Debian's etcd 3.4, as the members of a metadata cluster run it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pitrix import pki
from pitrix.metad import manage_api, membership
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.issuer_share import KEY as ISSUER_KEY
from pitrix.metad.mirror import Mirror
from pitrix.metad.peering import Peering, adopted
from pitrix.runtime.authority import sign_peer
from pitrix.store import Store
from pitrix.store.embedded import BINARY_VARIABLE, EmbeddedEtcd

from .conftest import Net

SYSTEM_ETCD = Path("/usr/bin/etcd")


def _port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


class World:
    def __init__(self, tmp: Path, ip: str) -> None:
        self.state = tmp / "state"
        self.ip = ip
        self.peer_port = _port(ip)
        self.issuer = pki.CertificateAuthority.create("issuer")
        self.issuer_cert, self.issuer_key = tmp / "issuer.pem", tmp / "issuer.key"
        self.issuer_cert.write_bytes(self.issuer.cert_pem)
        self.issuer_key.write_bytes(pki.key_to_pem(self.issuer.key))
        self.peers = pki.CertificateAuthority.create("pitrix etcd peers")
        self.etcd = EmbeddedEtcd(self.state, host=ip, peer_port=self.peer_port, unsafe_no_fsync=True)
        self.store: Store | None = None
        self.peering: Peering | None = None

    async def client(self) -> TestClient[Any, Any]:
        assert self.store is not None
        self.peering = Peering(
            self.etcd,
            self.store,
            member="",
            issuer_cert=self.issuer_cert,
            issuer_key=self.issuer_key,
            start_timeout=30.0,
        )
        app = manage_api.build_app(
            Mirror(self.store), self.store, 10.0, asyncio.Event(), peering=self.peering
        )
        return TestClient(TestServer(app, host="127.0.0.1"))


@pytest.fixture
async def world(tmp_path: Path, net: Net, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    monkeypatch.setenv(BINARY_VARIABLE, str(SYSTEM_ETCD))
    made = World(tmp_path, net.metad_ip)
    url = await made.etcd.start()
    made.store = await Store.connect([url], tls=made.etcd.client_tls)
    try:
        yield made
    finally:
        await made.store.close()
        await (made.peering.etcd if made.peering is not None else made.etcd).stop()


async def test_bad_peer_setups_are_refused_naming_the_field(world: World) -> None:
    assert world.store is not None
    async with await world.client() as client:
        listed = await (await client.get("/v1/etcd/peer-setup")).json()
        assert listed["member"] == "" and listed["peer_url"] == f"https://{world.ip}:{world.peer_port}"
        csr = listed["csr"].encode()
        good = sign_peer(world.peers, csr, world.ip, "cluster-x").decode()
        other_key = pki.make_csr(pki.generate_key(), pki.Subject("x"))
        base = {
            "name": "m0",
            "peers_ca": world.peers.cert_pem.decode(),
            "peer_certificate": good,
            "cluster_token": "cluster-x",
            "peer_cn": "cluster-x",
        }
        stranger = pki.CertificateAuthority.create("another peers CA")
        bad = [
            (["not", "an", "object"], "body"),
            ({**base, "name": "m=0"}, "name"),
            ({**base, "name": ""}, "name"),
            ({**base, "cluster_token": 7}, "cluster_token"),
            ({**base, "peer_cn": ["x"]}, "peer_cn"),
            ({**base, "peers_ca": "not a certificate"}, "peers_ca"),
            ({**base, "peer_certificate": ""}, "peer_certificate"),
            ({**base, "peer_certificate": sign_peer(world.peers, other_key, world.ip, "cluster-x").decode()},
             "peer_certificate"),
            ({**base, "peer_certificate": sign_peer(stranger, csr, world.ip, "cluster-x").decode()},
             "peer_certificate"),
            ({**base, "peer_cn": "cluster-y"}, "peer_cn"),
        ]  # fmt: skip
        pid = world.etcd.pid
        for body, field in bad:
            answer = await client.post("/v1/etcd/peer-setup", json=body)
            doc = await answer.json()
            assert (answer.status, doc["field"]) == (400, field), doc
            assert doc["error"].startswith(f"{field}: ")
        # Nothing applied: the same etcd process, a single member, no issuer published.
        assert world.etcd.pid == pid and world.peering is not None and world.peering.etcd is world.etcd
        found, _, _ = await membership.members(world.store)
        assert [m.name for m in found] == ["pitrix"]
        assert await world.store.get(ISSUER_KEY) is None
        assert adopted(world.state, world.ip, world.peer_port) is None


async def test_a_single_member_moves_to_the_peers_tls_with_its_data(world: World) -> None:
    store = world.store
    assert store is not None
    await store.put("/clusters/c1/env/web/port", b"80")
    async with await world.client() as client:
        csr = (await (await client.get("/v1/etcd/peer-setup")).json())["csr"].encode()
        body = {
            "name": "m0",
            "peers_ca": world.peers.cert_pem.decode(),
            "peer_certificate": sign_peer(world.peers, csr, world.ip, "cluster-x").decode(),
            "cluster_token": "cluster-x",
            "peer_cn": "cluster-x",
        }
        answer = await client.post("/v1/etcd/peer-setup", json=body)
        assert answer.status == 200, await answer.text()
        assert (await answer.json())["restarted"] is True
        assert world.peering is not None and world.peering.etcd is not world.etcd
        # The same data, through the same store (it reconnected), the member renamed m0.
        kv = await store.get("/clusters/c1/env/web/port")
        assert kv is not None and kv.value == b"80"
        found, _, _ = await membership.members(store)
        assert [(m.name, m.peer_urls) for m in found] == [("m0", [f"https://{world.ip}:{world.peer_port}"])]
        assert await store.get(ISSUER_KEY) is not None  # for the members that join
        # Asked again: done already; under another name: a 409.
        again = await client.post("/v1/etcd/peer-setup", json=body)
        assert (again.status, (await again.json())["restarted"]) == (200, False)
        other = await client.post("/v1/etcd/peer-setup", json={**body, "name": "m1"})
        assert (other.status, (await other.json())["field"]) == (409, "name")
        assert (await (await client.get("/v1/etcd/peer-setup")).json())["member"] == "m0"
    # The next start of this metad starts its etcd as that member, data kept.
    moved = adopted(world.state, world.ip, world.peer_port)
    assert moved is not None and moved[0] == "m0" and moved[1].allowed_cn == "cluster-x"
    await world.peering.etcd.stop()
    restarted = EmbeddedEtcd(
        world.state, host=world.ip, peer_port=world.peer_port, name="m0", peers=moved[1], startup_timeout=30.0
    )
    world.peering.etcd = restarted
    await restarted.start()
    kv = await store.get("/clusters/c1/env/web/port")
    assert kv is not None and kv.value == b"80"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_pitrix_metad_moves_its_etcd_and_starts_it_again_as_the_member(
    tmp_path: Path, net: Net, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real daemon: the move through its management port, its stop stopping the etcd that runs
    now, and its next start, with the same flags, starting that etcd as member m0 on its data."""
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    monkeypatch.setenv(BINARY_VARIABLE, str(SYSTEM_ETCD))
    state, ip = tmp_path / "state", net.metad_ip
    peer_port = _port(ip)
    peers = pki.CertificateAuthority.create("pitrix etcd peers")

    async def start() -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pitrix.metad.main",
            "--listen-ip", ip, "--instance-port", "0", "--manage-port", "0",
            "--embedded-etcd", "--state-dir", str(state),
            "--etcd-client-port", "0", "--etcd-peer-port", str(peer_port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60.0)
        assert line, "metad exited before it served"
        return process, json.loads(line)

    async def stop(process: asyncio.subprocess.Process) -> None:
        etcd_pid = json.loads((state / "etcd.pid.json").read_text())["pid"]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60.0) == 0
        assert not _alive(etcd_pid)  # the etcd that ran last, stopped with metad

    process, ready = await start()
    try:
        async with MetadManagementClient(ready["manage_url"]) as manage:
            await manage.put_data("/clusters/c1/env/web/port", 80)
            setup = await manage.etcd_peer_setup()
            assert setup["member"] == "" and setup["peer_url"] == f"https://{ip}:{peer_port}"
            cert = sign_peer(peers, setup["csr"].encode(), ip, "cluster-x")
            moved = await manage.etcd_peer_adopt("m0", peers.cert_pem, cert, "cluster-x", "cluster-x")
            assert moved["restarted"] is True
            await manage.put_data("/clusters/c1/env/web/port", 81)
        await stop(process)
        process, ready = await start()
        async with MetadManagementClient(ready["manage_url"]) as manage:
            assert (await manage.etcd_peer_setup())["member"] == "m0"
            assert await manage.get_data("/clusters/c1/env/web/port") == "81"
            listed = await manage.etcd_members()
            assert [(m["name"], m["peer_urls"]) for m in listed["members"]] == [
                ("m0", [f"https://{ip}:{peer_port}"])
            ]
        await stop(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
