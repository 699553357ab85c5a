"""The appcenter profile's plain-HTTP metadata proxy, in front of a real mutual-TLS metad.

An agent with i-web1's certificate runs its proxy on i-web1's address; requests are written byte
for byte (as an attacker would) and compared with what metad answers i-web1 directly over TLS.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import running

from pitrix.agent.agent import Agent, build_agent
from pitrix.agent.config import Overrides, load_config
from pitrix.agent.hostsfile import ensure_entry, hosts_text
from pitrix.agent.metadata_proxy import MAX_WAITS, MetadataProxy, check_request, peer_allowed
from pitrix.store import Store
from tests.metad.tlsworld import TLSWorld, start_world

_blocks = itertools.count(random.Random(os.getpid() * 13).randrange(0, 200))


@dataclass
class ProxyWorld:
    tls: TLSWorld
    root: Path
    ip: str  # i-web1's address: the agent binds it, the proxy listens on it
    other_ip: str  # i-web2's address: another VM on the same host
    foreign_ip: str  # i-x1's (another owner's cluster)


def _cluster(cid: str, owner: str, hosts: dict[str, tuple[str, str]]) -> dict[str, Any]:
    by_role: dict[str, dict[str, Any]] = {}
    for iid, (role, ip) in hosts.items():
        by_role.setdefault(role, {})[iid] = {"instance_id": iid, "ip": ip, "role": role}
    return {"cluster": {"cluster_id": cid, "owner": owner}, "hosts": by_role, "env": {"web": {"port": "80"}}}


@pytest.fixture
async def proxy_world(store: Store, tmp_path: Path) -> AsyncIterator[ProxyWorld]:
    block = next(_blocks) % 250 + 1
    base = f"127.103.{block}"
    world = await start_world(store, f"{base}.1", tmp_path / "pki")
    ip, other, foreign = f"{base}.11", f"{base}.12", f"{base}.21"
    try:
        c1 = _cluster("c1", "usr-a", {"i-web1": ("web", ip), "i-web2": ("web", other)})
        await world.manage.post_data("/clusters/c1", c1)
        c3 = _cluster("c3", "usr-b", {"i-x1": ("x", foreign)})
        c3["env"] = {"x": {"secret": "other-owners-secret"}}
        await world.manage.post_data("/clusters/c3", c3)
        for iid, cid, role, addr in (("i-web1", "c1", "web", ip), ("i-x1", "c3", "x", foreign)):
            await world.manage.put_mapping(iid, {"cluster_id": cid, "role": role, "ip": addr})
        world.save("i-web1", world.ca.issue_instance("i-web1", "usr-a", "c1"))
        world.save("i-x1", world.ca.issue_instance("i-x1", "usr-b", "c3"))
        root = tmp_path / "vm"
        (root / "etc/confd/conf.d").mkdir(parents=True)
        (root / "etc/hosts").write_text("127.0.0.1 localhost\n10.9.9.9 metadata\n")
        yield ProxyWorld(world, root, ip, other, foreign)
    finally:
        await world.close()
        await world.metad.stop()


def appcenter_agent(w: ProxyWorld, listen: str) -> Agent:
    cred = w.tls.creds["i-web1"]
    ov = Overrides(
        nodes=[w.tls.metad.instance_url],
        client_cert=cred.cert,
        client_key=cred.key,
        client_cakeys=cred.ca,
        watch=True,
        profile="appcenter",
        metadata_listen=listen,
    )
    config = load_config(w.root, None, ov, environ={"PITRIX_VM_IP": w.ip})
    config.run_commands = False
    return build_agent(config, announce=lambda _info: None)


async def raw(
    host: str, port: int, request: bytes, *, local_ip: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Exact bytes to the proxy; (status, headers, body) of its answer."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(local_ip, 0) if local_ip else None)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ", 2)[1]), headers, body


def get(target: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: metadata", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_proxy_forwards_this_vms_view_and_refuses_the_rest(proxy_world: ProxyWorld) -> None:
    w = proxy_world
    agent = appcenter_agent(w, f"{w.ip}:0")
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 20)  # the proxy starts before the first round
        assert agent.proxy_started is not None
        proxy: MetadataProxy = await asyncio.wait_for(agent.proxy_started, 20)
        port = proxy.port

        # curl's request (no Accept): metad's own default answer (its text format), status, type and
        # body unchanged.
        for target, accept in (
            ("/self/host/ip", None),
            ("/self/host", None),
            ("/self/host", "application/json"),
        ):
            extra = [f"Accept: {accept}"] if accept else []
            status, headers, body = await raw(w.ip, port, get(target, "User-Agent: curl/8", *extra))
            # curl sends Accept: */*, which metad answers as it answers no Accept: its text format
            direct = await w.tls.raw(
                w.tls.creds["i-web1"], "GET", target, headers={"Accept": accept or "*/*"}
            )
            assert (status, body) == direct, target
            assert headers["content-type"] and headers["connection"] == "close"
        status, _, body = await raw(w.ip, port, get("/self/host", "Accept: application/json"))
        assert status == 200 and json.loads(body)["instance_id"] == "i-web1"
        status, headers, body = await raw(w.ip, port, get("/self/host/ip", method="HEAD"))
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0

        # A long-poll goes through and wakes on a change.
        _, headers, _ = await raw(w.ip, port, get("/self/env/port", "Accept: application/json"))
        version = headers["x-metad-version"]
        poll = asyncio.ensure_future(
            raw(
                w.ip,
                port,
                get(f"/self/env/port?wait=true&prev_version={version}", "Accept: application/json"),
            )
        )
        await w.tls.manage.put_data("/clusters/c1/env/web/port", "8080")
        status, _, body = await asyncio.wait_for(poll, 30)
        assert status == 200 and json.loads(body) == "8080"

        # Long-polls beyond the cap are turned away at once, other reads still served.
        proxy.waits = MAX_WAITS
        status, _, _ = await raw(w.ip, port, get(f"/self/env/port?wait=true&prev_version={version}"))
        assert status == 503
        status, _, _ = await raw(w.ip, port, get("/self/env/port"))
        assert status == 200
        proxy.waits = 0

        # Writes and bodies.
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, headers, _ = await raw(w.ip, port, get("/self/cmd", "Content-Length: 0", method=method))
            assert status == 405 and headers["allow"] == "GET, HEAD", method
        status, _, _ = await raw(w.ip, port, get("/self/host", "Content-Length: 5") + b"hello")
        assert status == 413

        # Targets that would leave the instance API or inject a header.
        for target in (
            f"http://{w.tls.metad.manage_url.split('://', 1)[1]}/v1/mapping/i-x1",
            "//evil.example/self",
            "/self/../../clusters/c3",
            "/self/%2e%2e/%2E%2E/clusters/c3",
            "/self/host%0d%0aX-Injected:%201",
            "/self/host#frag",
            "/self\\..\\x",
        ):
            status, _, body = await raw(w.ip, port, get(target))
            assert status == 400, (target, status, body)

        # Another owner's data: not in this VM's view, whatever the path.
        for target in ("/clusters/c3", "/hosts/x/i-x1", "/c3/env", "/self/links/foreign/env"):
            status, _, body = await raw(w.ip, port, get(target, "Accept: application/json"))
            assert b"other-owners-secret" not in body and w.foreign_ip.encode() not in body, target
        status, _, body = await raw(w.ip, port, get("/", "Accept: application/json"))
        assert status == 200 and b"other-owners-secret" not in body and b"i-web1" in body

        # A Host that is not the proxy (a rebound name, from a browser on the VM): refused.
        status, _, _ = await raw(w.ip, port, b"GET /self/host HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert status == 421
        for host in (w.ip, f"{w.ip}:{port}", "METADATA:80"):
            status, _, _ = await raw(w.ip, port, f"GET /self/host HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert status == 200, host

        # Oversized heads.
        status, _, _ = await raw(w.ip, port, get("/self/host", "X-Big: " + "a" * 20000))
        assert status == 431
        status, _, _ = await raw(w.ip, port, get("/self/host", *(f"X-{i}: 1" for i in range(100))))
        assert status == 431
        status, _, _ = await raw(w.ip, port, get("/self/" + "a" * 5000))
        assert status == 414

        # A peer that is not this VM: another VM's own address is refused before anything is read.
        status, _, body = await raw(w.ip, port, get("/self/host"), local_ip=w.other_ip)
        assert status == 403 and b"this instance only" in body
        assert proxy.refused_peers == 1

        # /etc/hosts names the proxy, the stale line for the name is gone, the rest kept.
        hosts = (w.root / "etc/hosts").read_text()
        assert hosts == f"127.0.0.1 localhost\n{w.ip} metadata\n"


async def test_an_unbindable_listen_address_is_logged_and_the_agent_runs_on(proxy_world: ProxyWorld) -> None:
    w = proxy_world
    taken = socket.socket()
    taken.bind((w.ip, 0))
    taken.listen()
    try:
        agent = appcenter_agent(w, f"{w.ip}:{taken.getsockname()[1]}")
        async with running(agent):
            await asyncio.wait_for(agent.wait_rounds(1), 20)  # the agent itself goes on
            assert agent.proxy_started is not None
            with pytest.raises(OSError):
                await asyncio.wait_for(agent.proxy_started, 20)
    finally:
        taken.close()


def test_request_checks_and_peers() -> None:
    fwd = check_request(
        "GET", b"/self/host/?wait=true&prev_version=3", {"accept": "text/plain", "host": "metadata"}
    )
    assert (fwd.target, fwd.accept, fwd.wait) == ("/self/host/?wait=true&prev_version=3", "text/plain", True)
    assert check_request("GET", b"/self//host", {}).target == "/self/host"
    assert check_request("GET", b"/", {}).accept is None
    assert peer_allowed("127.0.0.1", "127.100.0.5") and peer_allowed("127.100.0.5", "127.100.0.5")
    assert peer_allowed("::ffff:127.0.0.1", "10.0.0.5")
    assert not peer_allowed("127.100.0.6", "127.100.0.5") and not peer_allowed("10.0.0.6", "10.0.0.5")


def test_hosts_line_is_idempotent(tmp_path: Path) -> None:
    assert hosts_text("127.0.0.1 localhost\n", "127.0.0.88", "metadata") == (
        "127.0.0.1 localhost\n127.0.0.88 metadata\n"
    )
    assert hosts_text("127.0.0.88 metadata # proxy\n", "127.0.0.88", "metadata") is None
    # The name leaves another address's line; that line's other names stay.
    assert hosts_text("10.0.0.1 metadata meta2\n", "127.0.0.88", "metadata") == (
        "10.0.0.1 meta2\n127.0.0.88 metadata\n"
    )
    assert ensure_entry(tmp_path, "127.0.0.88") is True
    assert ensure_entry(tmp_path, "127.0.0.88") is False
    assert (tmp_path / "etc/hosts").read_text() == "127.0.0.88 metadata\n"
