"""An embedded etcd of several members (a metadata cluster of three): peers over mutual TLS with
certificates from one shared CA, each member's clients on its own local CA; a lost member replaced
by etcd's member remove + add and a new member joining as ``existing``, with nothing lost.

Debian's etcd 3.4 (/usr/bin/etcd): the wheel's 3.5.1 can lose committed writes in a multi-member
cluster (etcd issue 13766). Its absence is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pitrix import pki
from pitrix.backoff import Backoff
from pitrix.store import Store
from pitrix.store.embedded import BINARY_VARIABLE, EmbeddedEtcd, EmbeddedEtcdError, EtcdPeers
from pitrix.store.tls import EtcdTLS

SYSTEM_ETCD = Path("/usr/bin/etcd")
HOST = "127.0.0.1"
START = 60.0  # members wait for a quorum: bounded, generous on a loaded CI host


def _port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Peers:
    """A shared peer CA and the members' fixed ports: what the runtime's authority would hand out."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = pki.CertificateAuthority.create("peers CA")
        (tmp / "peer-ca.pem").write_bytes(self.ca.cert_pem)
        self.ports: dict[str, tuple[int, int]] = {}

    def add(self, name: str) -> None:
        self.ports[name] = (_port(), _port())
        cert = self.ca.issue_server([HOST], "etcd-" + name, client_auth=True)
        cert.write(self.tmp / f"{name}-peer.crt", self.tmp / f"{name}-peer.key")

    def urls(self, names: list[str]) -> dict[str, str]:
        return {n: f"https://{HOST}:{self.ports[n][1]}" for n in names}

    def member(self, name: str, names: list[str], state: str = "new", ca: Path | None = None) -> EmbeddedEtcd:
        tls = EtcdTLS(
            ca or self.tmp / "peer-ca.pem", self.tmp / f"{name}-peer.crt", self.tmp / f"{name}-peer.key"
        )
        peers = EtcdPeers(self.urls(names), tls, state=state, token="test-cluster")  # type: ignore[arg-type]
        client, peer = self.ports[name]
        return EmbeddedEtcd(
            self.tmp / name,
            HOST,
            client,
            peer,
            unsafe_no_fsync=True,
            name=name,
            peers=peers,
            startup_timeout=START,
        )


@pytest.fixture
async def peers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Peers]:
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    monkeypatch.setenv(BINARY_VARIABLE, str(SYSTEM_ETCD))
    yield Peers(tmp_path)


async def _gateway(member: EmbeddedEtcd, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """etcd's gRPC gateway as the member's own client (what the metad beside it would use).

    etcd refuses a member change ("unhealthy cluster", gRPC 14) until its members have been
    connected for a few seconds (its strict reconfiguration check): asked again until then.
    """
    assert member.client_tls is not None
    connector = aiohttp.TCPConnector(ssl=member.client_tls.ssl_context())
    deadline = asyncio.get_running_loop().time() + START
    backoff = Backoff(0.1, 1.0)
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            async with session.post(member.client_url + path, json=body) as response:
                text = await response.text()
                if response.status == 200:
                    answer: dict[str, Any] = json.loads(text)
                    return answer
            assert "unhealthy cluster" in text and asyncio.get_running_loop().time() < deadline, text
            await asyncio.sleep(backoff.next())


async def test_three_members_form_one_cluster_and_a_lost_one_is_replaced(peers: Peers) -> None:
    names = ["m0", "m1", "m2"]
    for name in names:
        peers.add(name)
    members = [peers.member(n, names) for n in names]
    try:
        await asyncio.gather(*(m.start() for m in members))
        listed = await _gateway(members[0], "/v3/cluster/member/list", {})
        assert sorted(m["name"] for m in listed["members"]) == names
        async with Store([members[0].client_url], tls=members[0].client_tls) as store:
            await store.put("/before", b"1")
        async with Store([members[2].client_url], tls=members[2].client_tls) as store:
            kv = await store.get("/before")
            assert kv is not None and kv.value == b"1"

        # m1 is lost (its VM terminated): removed from the cluster, a new member added in its place.
        await members[1].stop()
        lost = next(m for m in listed["members"] if m["name"] == "m1")
        await _gateway(members[0], "/v3/cluster/member/remove", {"ID": lost["ID"]})
        async with Store([members[2].client_url], tls=members[2].client_tls) as store:
            await store.put("/during", b"2")  # two of two: the cluster still takes writes
        peers.add("m3")
        now = ["m0", "m2", "m3"]
        await _gateway(members[0], "/v3/cluster/member/add", {"peerURLs": [peers.urls(["m3"])["m3"]]})
        members[1] = peers.member("m3", now, state="existing")
        await members[1].start()
        async with Store([members[1].client_url], tls=members[1].client_tls) as store:
            for key, value in (("/before", b"1"), ("/during", b"2")):
                kv = await store.get(key)
                assert kv is not None and kv.value == value, key
        listed = await _gateway(members[1], "/v3/cluster/member/list", {})
        assert sorted(m["name"] for m in listed["members"]) == now
    finally:
        for member in members:
            await member.stop()


async def test_a_peer_certificate_from_another_ca_does_not_join(peers: Peers, tmp_path: Path) -> None:
    names = ["a0", "a1"]
    for name in names:
        peers.add(name)
    foreign = pki.CertificateAuthority.create("someone else's CA")
    foreign.issue_server([HOST], "etcd-a1", client_auth=True).write(
        tmp_path / "a1-peer.crt", tmp_path / "a1-peer.key"
    )
    (tmp_path / "foreign-ca.pem").write_bytes(foreign.cert_pem)
    good = peers.member("a0", names)
    good.startup_timeout = 3.0
    bad = peers.member("a1", names, ca=tmp_path / "foreign-ca.pem")
    bad.startup_timeout = 3.0
    try:
        results = await asyncio.gather(good.start(), bad.start(), return_exceptions=True)
        # Neither reaches a quorum of two: each refuses the other's certificate.
        assert all(
            isinstance(r, EmbeddedEtcdError) and "did not become healthy" in str(r) for r in results
        ), results
    finally:
        await good.stop()
        await bad.stop()


def test_a_member_of_several_is_described_consistently(tmp_path: Path) -> None:
    tls = EtcdTLS(tmp_path / "ca.pem", tmp_path / "m.crt", tmp_path / "m.key")
    urls = {"m0": f"https://{HOST}:2380", "m1": "https://127.0.0.2:2380"}
    with pytest.raises(EmbeddedEtcdError, match="'mx' is not among"):
        EmbeddedEtcd(tmp_path, HOST, 2379, 2380, name="mx", peers=EtcdPeers(urls, tls))
    with pytest.raises(EmbeddedEtcdError, match="fixed peer port"):
        EmbeddedEtcd(tmp_path, HOST, 2379, 0, name="m0", peers=EtcdPeers(urls, tls))
    with pytest.raises(EmbeddedEtcdError, match=r"not https://127\.0\.0\.2"):
        EmbeddedEtcd(tmp_path, HOST, 2379, 2380, name="m1", peers=EtcdPeers(urls, tls))
    with pytest.raises(EmbeddedEtcdError, match="speak TLS"):
        EmbeddedEtcd(tmp_path, HOST, 2379, 2380, name="m0", tls=False, peers=EtcdPeers(urls, tls))
    member = EmbeddedEtcd(tmp_path, HOST, 2379, 2380, name="m0", peers=EtcdPeers(urls, tls, state="existing"))
    argv = member._argv(f"https://{HOST}:2379", f"https://{HOST}:2380")
    assert f"--initial-cluster=m0=https://{HOST}:2380,m1=https://127.0.0.2:2380" in argv
    assert "--initial-cluster-state=existing" in argv
