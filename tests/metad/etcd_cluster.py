"""A metadata cluster of three on loopback: a real 3-member etcd with a pitrix-metad (mTLS) beside
each member, and agents watching through all three; shared by the metad HA test and the chaos suite.

Debian's etcd 3.4 (/usr/bin/etcd), not the wheel's 3.5.1: etcd 3.5.0-3.5.2 can lose committed
writes when a member of a multi-member cluster is killed (etcd issue 13766). Members are killed
with SIGKILL and brought back on the same data directory and the same addresses, so agents and the
writer that listed them find them again.

The members speak mutual TLS to clients and to each other, as a metadata cluster's do: a CA of
the cluster's own signs each member's certificate (its IP, server and client use, for its peers
and its own gateway) and one client certificate, which only the metads hold.
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
from urllib.parse import urlsplit

import aiohttp

from pitrix import pki
from pitrix.agent.backends.metad import MetadBackend
from pitrix.agent.errors import BackendError
from pitrix.agent.metad_client import MetadClient
from pitrix.metad.client import MetadManagementClient
from pitrix.store.tls import EtcdTLS

ETCD = Path("/usr/bin/etcd")
DEADLINE = 60.0


def free_port(ip: str) -> int:
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
    drain: asyncio.Task[None] | None = None

    def kill(self) -> None:
        for process in (self.metad, self.process):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGKILL)

    async def wait_dead(self) -> None:
        for process in (self.metad, self.process):
            if process is not None:
                await process.wait()
        if self.drain is not None:
            with contextlib.suppress(Exception):
                await self.drain


@dataclass
class EtcdCluster:
    members: list[Member]
    data: Path
    pki_dir: Path
    token: str
    extra_args: list[str] = field(default_factory=list)  # more etcd flags (e.g. --max-txn-ops)

    async def start(self, member: Member, state: str = "new") -> asyncio.Future[None]:
        """Start one member's etcd; the future resolves once it serves clients. On its old data
        directory (``state="existing"``) etcd rejoins with the identity it had."""
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        member.log.clear()
        member.process = await asyncio.create_subprocess_exec(
            str(ETCD),
            "--name", member.name, "--data-dir", str(self.data / member.name),
            "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--client-cert-auth", "--trusted-ca-file", str(self.pki_dir / "etcd-ca.pem"),
            "--cert-file", str(self.pki_dir / f"etcd-{member.name}.crt"),
            "--key-file", str(self.pki_dir / f"etcd-{member.name}.key"),
            "--peer-client-cert-auth", "--peer-trusted-ca-file", str(self.pki_dir / "etcd-ca.pem"),
            "--peer-cert-file", str(self.pki_dir / f"etcd-{member.name}.crt"),
            "--peer-key-file", str(self.pki_dir / f"etcd-{member.name}.key"),
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-outputs", "stderr", *self.extra_args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        member.drain = asyncio.create_task(_drain(member, ready))
        return ready

    async def start_all(self) -> None:
        ready = [await self.start(m) for m in self.members]
        try:
            await asyncio.wait_for(asyncio.gather(*ready), DEADLINE)
        except TimeoutError:
            logs = "\n".join(f"{m.name}: {''.join(m.log[-8:])}" for m in self.members)
            raise AssertionError(f"the etcd cluster did not form within {DEADLINE} s:\n{logs}") from None

    async def start_metad(self, member: Member, log: Path) -> None:
        """Start the member's pitrix-metad; once it ran before, on the ports it had then."""
        ports = ("0", "0")
        if member.instance_url:
            ports = (str(urlsplit(member.instance_url).port), str(urlsplit(member.manage_url).port))
        with log.open("ab") as err:
            member.metad = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pitrix.metad.main",
                "--listen-ip", member.ip, "--instance-port", ports[0], "--manage-port", ports[1],
                "--etcd", member.client_url, "--wait-timeout", "120", "--log-level", "info",
                "--etcd-cacert", str(self.etcd_tls.ca_file), "--etcd-cert", str(self.etcd_tls.cert_file),
                "--etcd-key", str(self.etcd_tls.key_file),
                "--tls-cert", str(self.pki_dir / f"{member.name}.crt"),
                "--tls-key", str(self.pki_dir / f"{member.name}.key"),
                "--client-ca", str(self.pki_dir / "ca.pem"),
                stdout=asyncio.subprocess.PIPE, stderr=err,
            )  # fmt: skip
        assert member.metad.stdout is not None
        line = await asyncio.wait_for(member.metad.stdout.readline(), DEADLINE)
        if not line:
            raise RuntimeError(f"pitrix-metad beside {member.name} exited: see {log}")
        ready = json.loads(line)
        member.instance_url, member.manage_url = ready["instance_url"], ready["manage_url"]

    async def restart(self, member: Member, log: Path) -> None:
        """Bring a killed member back: its etcd on its data directory, then its metad."""
        ready = await self.start(member, state="existing")
        try:
            await asyncio.wait_for(ready, DEADLINE)
        except TimeoutError:
            raise AssertionError(
                f"etcd {member.name} did not rejoin within {DEADLINE} s:\n{''.join(member.log[-8:])}"
            ) from None
        await self.start_metad(member, log)

    @property
    def etcd_tls(self) -> EtcdTLS:
        """The CA and client certificate the members answer (what each metad holds)."""
        return EtcdTLS(
            self.pki_dir / "etcd-ca.pem", self.pki_dir / "etcd-client.crt", self.pki_dir / "etcd-client.key"
        )

    def manage(self, member: Member) -> MetadManagementClient:
        return MetadManagementClient(
            member.manage_url,
            ca_file=self.pki_dir / "ca.pem",
            cert_file=self.pki_dir / "runtime.crt",
            key_file=self.pki_dir / "runtime.key",
        )

    async def leader(self) -> Member:
        """The member etcd says leads, from its gRPC gateway's status call (live members only)."""
        connector = aiohttp.TCPConnector(ssl=self.etcd_tls.ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            ids = {}
            leader = None
            for m in self.members:
                if m.process is None or m.process.returncode is not None:
                    continue
                async with session.post(m.client_url + "/v3/maintenance/status", json={}) as response:
                    status = await response.json()
                ids[status["header"]["member_id"]] = m
                leader = status["leader"]
        assert leader in ids, f"leader {leader} is none of {list(ids)}"
        return ids[leader]


async def _drain(member: Member, ready: asyncio.Future[None]) -> None:
    """Keep the member's log (read so its pipe never fills); resolve ``ready`` when it serves clients."""
    assert member.process is not None and member.process.stderr is not None
    async for raw in member.process.stderr:
        line = raw.decode(errors="replace")
        member.log.append(line)
        del member.log[:-200]
        # etcd 3.4 says the first once it published itself to the cluster; 3.5 the second.
        serving = "serving client traffic" in line or "ready to serve client requests" in line
        if serving and not ready.done():
            ready.set_result(None)
    if not ready.done():
        ready.set_exception(RuntimeError(f"etcd {member.name} exited:\n{''.join(member.log[-20:])}"))


def require_etcd() -> str | None:
    """Why the cluster cannot run here (for pytest.fail: a missing etcd is a failure, not a skip)."""
    if os.access(ETCD, os.X_OK):
        return None
    return (
        f"{ETCD} is missing: a metadata cluster of three needs Debian's etcd-server (3.4), since the "
        "wheel's etcd 3.5.1 loses writes in multi-member clusters; `apt-get install -y etcd-server`"
    )


def members_on(ips: list[str]) -> list[Member]:
    """One member per address (m0, m1, ...), each on a free client and a free peer port."""
    return [
        Member(f"m{k}", ip, f"https://{ip}:{free_port(ip)}", f"https://{ip}:{free_port(ip)}")
        for k, ip in enumerate(ips)
    ]


@contextlib.asynccontextmanager
async def running(cluster: EtcdCluster) -> AsyncIterator[EtcdCluster]:
    """The cluster's members started (formed within the deadline), then SIGKILLed and reaped."""
    try:
        await cluster.start_all()
        yield cluster
    finally:
        for m in cluster.members:
            m.kill()
        for m in cluster.members:
            await m.wait_dead()


@contextlib.asynccontextmanager
async def three_members(ips: list[str], tmp: Path, instances: list[str]) -> AsyncIterator[EtcdCluster]:
    """Three etcd members with a metad beside each, and instance certificates (owner usr-a,
    cluster c1) for ``instances``; everything is SIGKILLed and reaped on the way out."""
    members = members_on(ips)
    pki_dir = tmp / "pki"
    pki_dir.mkdir()
    ca = pki.CertificateAuthority.create("ha CA")
    (pki_dir / "ca.pem").write_bytes(ca.cert_pem)
    for m in members:
        ca.issue_server([m.ip]).write(pki_dir / f"{m.name}.crt", pki_dir / f"{m.name}.key")
    ca.issue_management().write(pki_dir / "runtime.crt", pki_dir / "runtime.key")
    etcd_ca = pki.CertificateAuthority.create("ha etcd CA")
    (pki_dir / "etcd-ca.pem").write_bytes(etcd_ca.cert_pem)
    for m in members:
        # etcd checks a peer's client certificate against the address the connection came from,
        # and a member dialling 127.101.x.y on loopback connects from 127.0.0.1.
        member_cert = etcd_ca.issue_server([m.ip, "127.0.0.1"], "etcd-" + m.name, client_auth=True)
        member_cert.write(pki_dir / f"etcd-{m.name}.crt", pki_dir / f"etcd-{m.name}.key")
    etcd_client = etcd_ca.issue_client(pki.Subject("metad", "pitrix", "etcd"))
    etcd_client.write(pki_dir / "etcd-client.crt", pki_dir / "etcd-client.key")
    for iid in instances:
        ca.issue_instance(iid, "usr-a", "c1").write(pki_dir / f"{iid}.crt", pki_dir / f"{iid}.key")
    cluster = EtcdCluster(members, tmp / "etcd", pki_dir, f"pitrix-ha-{os.getpid()}-{ips[0]}")
    async with running(cluster):
        await asyncio.gather(*(cluster.start_metad(m, tmp / f"metad-{m.name}.log") for m in members))
        yield cluster


class Agent:
    """The agent's watch loop on its metad backend (given every endpoint): re-read the view after
    every change, as the agent does, and keep what it saw."""

    def __init__(self, iid: str, nodes: list[str], pki_dir: Path) -> None:
        self.client = MetadClient(
            nodes,
            client_cert=pki_dir / f"{iid}.crt",
            client_key=pki_dir / f"{iid}.key",
            ca_file=pki_dir / "ca.pem",
            wait_timeout=120.0,
        )
        self.backend = MetadBackend(self.client)
        self.values: dict[str, str] = {}
        self.version = ""
        self.seen: list[str] = []
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
                self.values = values
                self.version = values.get("/self/env/version", "")
                self.seen.append(self.version)
                self.changed.notify_all()

    async def sees(self, version: str) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.version == version)

    async def close(self) -> None:
        await self.backend.close()


@contextlib.asynccontextmanager
async def watching(agents: list[Agent]) -> AsyncIterator[None]:
    """The agents' watch loops run for the block; cancelled and closed after it."""
    tasks = [asyncio.create_task(a.run()) for a in agents]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for agent in agents:
            await agent.close()
