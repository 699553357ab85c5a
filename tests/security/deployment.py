"""One real deployment the probes attack: a simulator and a pitrixd as separate processes.

Three principals hold admin API tokens: ``operator`` (an admin: it defines the runtimes), and the
owners ``alice`` and ``bob`` (plain owners). Runtime ``sim`` gives each owner a metadata cluster
of its own; runtime ``shared`` (``placement = "per-runtime"``) serves both from one. Each owner has
one cluster on each runtime (``a1``/``b1`` per-owner, ``a2``/``b2`` shared), one web node each;
``b1`` carries a password parameter set through the API, the secret the probes hunt for.

Everything the probes learn comes through surfaces an attacker or an operator has: the admin API,
the simulator's ledger (the cloud's DescribeInstances), a VM's root directory (what a process on
that VM reads), and files under the state directories. Nothing is read through pitrixd's etcd
client, so the suite does not depend on how the fixes authenticate to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from pitrix.cli.demo import Child, _bin, sim_runtime, start_child, stop_child
from simulator.testing import random_network

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "examples" / "demo" / "app.yaml"
METADATA_IMAGE = "pitrix-metadata"
INSTANCE_PORT = 8080
MANAGE_PORT = 9611
ETCD_PORTS = (2379, 2380)
READY_TIMEOUT = 150.0
# What a VM's agent holds (paths inside the VM's root).
AGENT_CONFIG = "etc/pitrix/agent.toml"
AGENT_CA = "etc/pitrix/ca.pem"
AGENT_CERT = "etc/pitrix/agent.crt"
AGENT_KEY = "etc/pitrix/agent.key"
USERDATA = "etc/rc.local"  # an exec userdata's script (simulator/userdata.py)


class Refused(Exception):
    """A request that did not get an HTTP answer: connection refused, reset, or a TLS failure."""


@dataclass(frozen=True)
class Answer:
    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass(frozen=True)
class Node:
    cid: str
    instance_id: str
    ip: str
    root: Path  # the VM's root directory: what a process on the VM can read

    def file(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def tls(self) -> ssl.SSLContext:
        """A client context with this node's own agent certificate, as its agent connects."""
        ctx = ssl.create_default_context(cafile=str(self.file(AGENT_CA)))
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        ctx.load_cert_chain(str(self.file(AGENT_CERT)), str(self.file(AGENT_KEY)))
        return ctx


@dataclass(frozen=True)
class MetadataVM:
    name: str
    instance_id: str
    ip: str
    root: Path

    def userdata(self) -> str:
        return (self.root / USERDATA).read_text(errors="replace")

    def etcd_ports(self, kind: str) -> list[int]:
        """``kind`` "client" (2379) or "peer" (2380), plus any such port the VM's etcd records in its
        state, should it have been moved."""
        ports = {ETCD_PORTS[0] if kind == "client" else ETCD_PORTS[1]}
        for path in (self.root / "var/lib/pitrix-metad").glob("**/etcd.*.json"):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                for name, value in json.loads(path.read_text()).items():
                    if kind not in name:
                        continue
                    text = str(value).rsplit(":", 1)[-1].rstrip("/")
                    if text.isdigit() and int(text) > 0:
                        ports.add(int(text))
        if kind == "client":
            ports.update(self._ready_line_ports())
        return sorted(ports)

    def _ready_line_ports(self) -> set[int]:
        """The etcd client ports metad's ready line names (its stdout goes to its log on the VM)."""
        ports: set[int] = set()
        try:
            lines = (self.root / "var/log/pitrix-metad.log").read_text(errors="replace").splitlines()
        except OSError:
            return ports
        for line in lines:
            if '"ready"' not in line:
                continue
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                for url in json.loads(line).get("etcd", []):
                    text = str(url).rsplit(":", 1)[-1].rstrip("/")
                    if text.isdigit():
                        ports.add(int(text))
        return ports


@dataclass
class Deployment:
    workdir: Path
    sim: Child
    pitrixd: Child
    tokens: dict[str, str]
    http: aiohttp.ClientSession
    runtime_secret: str = ""
    password: str = ""
    clusters: dict[str, str] = field(default_factory=dict)  # a1, b1, a2, b2 -> cluster id
    nodes: dict[str, Node] = field(default_factory=dict)  # a1, ... -> its web node
    metadata: dict[str, MetadataVM] = field(default_factory=dict)  # alice, bob, shared
    shop: dict[str, Answer] = field(default_factory=dict)  # alice's and bob's registrations
    events: list[str] = field(default_factory=list)  # the admin's event stream, as received

    @property
    def url(self) -> str:
        return str(self.pitrixd.ready["url"])

    @property
    def sim_url(self) -> str:
        return str(self.sim.ready["url"])

    @property
    def state_dir(self) -> Path:
        return self.workdir / "pitrixd"

    @property
    def etcd_endpoints(self) -> list[str]:
        return [str(e) for e in self.pitrixd.ready.get("etcd", [])]

    def headers(self, who: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}

    async def call(
        self,
        method: str,
        path: str,
        who: str | None = "operator",
        body: Any = None,
        headers: dict[str, str] | None = None,
        data: bytes | str | None = None,
    ) -> Answer:
        """One admin API request as ``who`` (None: no token)."""
        sent = {**self.headers(who), **(headers or {})}
        kwargs: dict[str, Any] = {"headers": sent}
        if body is not None:
            kwargs["json"] = body
        elif data is not None:
            kwargs["data"] = data
        async with self.http.request(method, self.url + path, **kwargs) as response:
            return Answer(response.status, await response.text())

    async def ok(self, method: str, path: str, who: str = "operator", body: Any = None) -> Any:
        answer = await self.call(method, path, who, body)
        assert answer.status < 300, f"{method} {path} as {who}: {answer.status} {answer.text[:500]}"
        return answer.json()

    async def wait_done(self, cid: str, who: str, job: str | None = None) -> dict[str, Any]:
        """The cluster once its (given) job has ended, via the API's own long-poll."""
        query = f"?timeout=60{'&job=' + job if job else ''}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while True:
            view: dict[str, Any] = await self.ok("GET", f"/v1/clusters/{cid}/wait{query}", who)
            if view.get("state") not in (
                "creating",
                "scaling",
                "updating",
                "deleting",
                "starting",
                "stopping",
            ):
                return view
            if loop.time() > deadline:
                raise AssertionError(f"cluster {cid} still {view.get('state')} after {READY_TIMEOUT}s")

    def vm_root(self, instance_id: str) -> Path:
        return self.workdir / "sim" / "vms" / instance_id / "root"

    async def ledger(self) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.sim_url}/_sim/ledger") as response:
            return list((await response.json())["instances"])


def demo_app(name: str = "demo", version: str = "1.0.0") -> dict[str, Any]:
    """The demo app with a password parameter on its web role."""
    spec: dict[str, Any] = yaml.safe_load(APP.read_text())
    spec.update(name=name, version=version)
    web = next(r for r in spec["roles"] if r["name"] == "web")
    web["env"]["db_password"] = {"type": "password", "description": "what the probes must never see"}
    return spec


async def request_as(
    source_ip: str | None,
    method: str,
    url: str,
    *,
    tls: ssl.SSLContext | bool = False,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Answer:
    """One HTTP request from ``source_ip`` (an instance's address); Refused if no HTTP answer came."""
    connector = aiohttp.TCPConnector(
        local_addr=(source_ip, 0) if source_ip else None, ssl=tls, force_close=True
    )
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.request(method, url, data=body, headers=headers or {}) as response,
        ):
            return Answer(response.status, await response.text(errors="replace"))
    except (
        aiohttp.ClientConnectionError,
        aiohttp.ClientPayloadError,
        ssl.SSLError,
        OSError,
        TimeoutError,
    ) as exc:
        raise Refused(f"{type(exc).__name__}: {exc}") from None


def no_verify() -> ssl.SSLContext:
    """TLS without a client certificate and without checking the server: what a stranger can do."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _collect_events(http: aiohttp.ClientSession, url: str, token: str, into: list[str]) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
        async with http.get(
            f"{url}/v1/events", headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        ) as response:
            async for line in response.content:
                into.append(line.decode(errors="replace"))


def child_env() -> dict[str, str]:
    """The environment of a daemon the suite starts: JSON logs, no PITRIX_URL of the caller's."""
    env = dict(os.environ, PITRIX_LOG_FORMAT="json")
    env.pop("PITRIX_URL", None)
    return env


@contextlib.asynccontextmanager
async def deployed(workdir: Path) -> AsyncIterator[Deployment]:
    """Start the simulator and pitrixd, define the runtimes, register apps, create four clusters."""
    tokens = {who: f"{who}-{secrets.token_urlsafe(24)}" for who in ("operator", "alice", "bob")}
    sim = await start_child(
        "pitrix-sim",
        [
            _bin("pitrix-sim"),
            "--state-dir",
            str(workdir / "sim"),
            "--port",
            "0",
            "--network",
            random_network(),
        ],
        workdir / "sim.log",
        child_env(),
    )
    env = child_env()
    env["PITRIX_API__TOKENS"] = json.dumps(
        [
            {"token": tokens["operator"], "owner": "operator", "admin": True},
            {"token": tokens["alice"], "owner": "alice"},
            {"token": tokens["bob"], "owner": "bob"},
        ]
    )
    pitrixd: Child | None = None
    collector: asyncio.Task[None] | None = None
    try:
        pitrixd = await start_child(
            "pitrixd",
            [_bin("pitrixd"), "--state-dir", str(workdir / "pitrixd"), "--api-listen", "127.0.0.1:0"],
            workdir / "pitrixd.log",
            env,
        )
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as http:
            d = Deployment(workdir, sim, pitrixd, tokens, http)
            collector = asyncio.create_task(_collect_events(http, d.url, tokens["operator"], d.events))
            await _populate(d)
            try:
                yield d
            finally:
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await collector
    finally:
        if pitrixd is not None:
            await stop_child(pitrixd)
        await stop_child(sim)
        _kill_vm_processes(workdir)


async def _populate(d: Deployment) -> None:
    runtime = {**sim_runtime(d.sim.ready, "sim"), "metadata_size": 1}
    d.runtime_secret = str(runtime["secret_access_key"])
    await d.ok("POST", "/v1/runtimes", body=runtime)
    await d.ok(
        "POST",
        "/v1/runtimes",
        body={**sim_runtime(d.sim.ready, "shared"), "placement": "per-runtime", "metadata_size": 1},
    )
    # Catalog shadowing (finding 5): alice registers shop first; bob's later version may be refused.
    d.shop["alice"] = await d.call("POST", "/v1/apps", "alice", demo_app("shop", "1.0.0"))
    assert d.shop["alice"].status in (200, 201), d.shop["alice"].text
    d.shop["bob"] = await d.call("POST", "/v1/apps", "bob", demo_app("shop", "1.0.1"))
    counts = {"web": 1, "lb": 0}
    plan = {
        "a1": ("alice", "sim", "shop"),  # by name, no version: must resolve to alice's own 1.0.0
        "b1": ("bob", "sim", demo_app()),
        "a2": ("alice", "shared", demo_app()),
        "b2": ("bob", "shared", demo_app()),
    }
    created = await asyncio.gather(
        *(
            d.ok("POST", "/v1/clusters", who, {"runtime": runtime_name, "app": app, "counts": counts})
            for who, runtime_name, app in plan.values()
        )
    )
    for label, answer in zip(plan, created, strict=True):
        d.clusters[label] = answer["cluster"]["id"]
    views = await asyncio.gather(*(d.wait_done(d.clusters[k], plan[k][0]) for k in plan))
    for label, view in zip(plan, views, strict=True):
        assert view["state"] == "active", f"{label}: {json.dumps(view)[:2000]}"
        node = next(n for n in view["nodes"] if n.get("ip"))
        d.nodes[label] = Node(
            d.clusters[label], node["instance_id"], node["ip"], d.vm_root(node["instance_id"])
        )
    # The secret the probes hunt for: a password parameter set on bob's per-owner cluster.
    d.password = f"pw-{secrets.token_hex(12)}"
    job = await d.ok(
        "POST", f"/v1/clusters/{d.clusters['b1']}/env", "bob", {"env": {"web": {"db_password": d.password}}}
    )
    view = await d.wait_done(d.clusters["b1"], "bob", job.get("id") or job.get("job", {}).get("id"))
    assert view["state"] == "active", json.dumps(view)[:2000]
    for vm in await d.ledger():
        if vm["image"] != METADATA_IMAGE or vm["status"] != "running":
            continue
        holder = "shared" if vm["name"].startswith("pitrix-shared-meta-") else vm["name"].split("-")[2]
        d.metadata[holder] = MetadataVM(vm["name"], vm["instance_id"], vm["ip"], d.vm_root(vm["instance_id"]))
    assert sorted(d.metadata) == ["alice", "bob", "shared"], d.metadata


def _kill_vm_processes(workdir: Path) -> None:
    """Whatever a VM of this deployment left running (the simulator stops its VMs; this is the net)."""
    needle = str(workdir).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"PITRIX_VM_ROOT=" + needle in environ:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


Outcome = Answer | Refused


async def attempt(source_ip: str | None, method: str, url: str, **kwargs: Any) -> Outcome:
    """``request_as``, with a refusal as a value: the probes assert on either."""
    try:
        return await request_as(source_ip, method, url, **kwargs)
    except Refused as exc:
        return exc


def assert_refused(outcome: Outcome, what: str, leaks: tuple[str, ...] = ()) -> None:
    """The attack got no HTTP answer at all, or a 4xx that shows none of ``leaks``; never a 2xx or 5xx."""
    if isinstance(outcome, Refused):
        return
    assert 400 <= outcome.status < 500, f"{what}: answered {outcome.status}: {outcome.text[:400]}"
    for leak in leaks:
        assert leak not in outcome.text, f"{what}: the refusal shows {leak!r}: {outcome.text[:400]}"


def assert_4xx(outcome: Outcome, what: str, leaks: tuple[str, ...] = ()) -> None:
    """An HTTP answer in 4xx: the server heard the request and refused it with a status, not a 500."""
    assert not isinstance(outcome, Refused), f"{what}: no HTTP answer ({outcome})"
    assert_refused(outcome, what, leaks)
