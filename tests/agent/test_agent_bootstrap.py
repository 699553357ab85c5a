"""The agent's certificate life against a real mutual-TLS metad: bootstrap, renewal, revocation.

The metad is set up as the runtime sets up a metadata VM: it holds only the metadata cluster's
issuer (a subordinate of pitrixd's root), trusts that issuer for clients, and signs its own server
certificate for its address. The agent's VM holds what userdata writes: the issuer certificate,
the paths its certificate and key go to, and a bootstrap token whose sha256 the runtime puts into
the instance's mapping once it runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import itertools
import json
import os
import random
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agent_helpers import AgentProcess, read_fifo_line
from cryptography import x509

from pitrix import pki
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.metad.tls import self_issued
from pitrix.store import Store
from simulator.light_agent import LightAgent

TOKEN = "bootstrap-" + "7" * 40
OWNER = "usr-a"
_blocks = itertools.count(random.Random(os.getpid() * 13).randrange(0, 200))


@dataclass
class TLSMetad:
    """A metad as the runtime starts it, with the management client of the runtime."""

    metad: Metad
    manage: MetadManagementClient
    issuer: pki.CertificateAuthority
    issuer_file: Path
    store: Store
    ip: str

    async def map_instance(self, token: str = TOKEN) -> None:
        """What the runtime does once the instance runs: its mapping, carrying the token's hash."""
        await self.manage.put_mapping(
            "i-1",
            {
                "cluster_id": "c1",
                "role": "web",
                "ip": self.ip,
                "bootstrap_sha256": hashlib.sha256(token.encode()).hexdigest(),
            },
        )

    async def next_put(self, key: str, after: int, timeout: float = 20.0) -> dict[str, object]:
        """The value of the first write to ``key`` after revision ``after`` (etcd watch, no polling)."""
        watch = self.store.watch_prefix(key, after + 1)
        try:
            async with asyncio.timeout(timeout):
                async for batch in watch:
                    for event in batch.events:
                        if event.key == key and event.type == "put":
                            return dict(json.loads(event.value))
        finally:
            await watch.aclose()  # type: ignore[attr-defined]
        raise AssertionError(f"the watch on {key} ended")


@pytest.fixture
async def tls_metad(store: Store, tmp_path: Path) -> AsyncIterator[TLSMetad]:
    block = next(_blocks) % 250 + 1
    listen_ip, vm_ip = f"127.103.{block}.1", f"127.103.{block}.10"
    pki_dir = tmp_path / "metad-pki"
    pki_dir.mkdir()
    root = pki.CertificateAuthority.create("pitrix test root")
    issuer = root.issue_subordinate("metadata cluster m1")
    issuer_file = pki_dir / "issuer.pem"
    issuer_file.write_bytes(issuer.cert_pem)
    tls = self_issued(issuer, listen_ip, issuer_file, pki_dir / "self")
    metad = Metad(store, listen_ip, 0, 0, wait_timeout=20.0, keepalive=0.3, tls=tls)
    await metad.start()
    issuer.issue_management().write(pki_dir / "runtime.crt", pki_dir / "runtime.key")
    manage = MetadManagementClient(
        metad.manage_url,
        idle_timeout=5.0,
        ca_file=issuer_file,
        cert_file=pki_dir / "runtime.crt",
        key_file=pki_dir / "runtime.key",
    )
    await manage.post_data(
        "/clusters/c1",
        {
            "cluster": {"cluster_id": "c1", "app_id": "app-demo", "owner": OWNER},
            "hosts": {"web": {"i-1": {"instance_id": "i-1", "ip": vm_ip, "role": "web"}}},
            "env": {"web": {"port": "80"}},
        },
    )
    try:
        yield TLSMetad(metad, manage, issuer, issuer_file, store, vm_ip)
    finally:
        await manage.close()
        await metad.stop()


def write_vm(root: Path, world: TLSMetad, *, token: str | None) -> None:
    """The VM's files as userdata writes them, and a template whose reload reports each render."""
    (root / "etc/pitrix").mkdir(parents=True)
    (root / "etc/confd/conf.d").mkdir(parents=True)
    (root / "etc/confd/templates").mkdir(parents=True)
    (root / "etc/pitrix/ca.pem").write_bytes(world.issuer.cert_pem)
    lines = [
        'backend = "metad"',
        f'nodes = ["{world.metad.instance_url}"]',
        "watch = true",
        'client_cakeys = "/etc/pitrix/ca.pem"',
        'client_cert = "/etc/pitrix/agent.crt"',
        'client_key = "/etc/pitrix/agent.key"',
        "[pitrix]",
        "heartbeat_interval = 1",
    ]
    if token is not None:
        # Give up on an unknown token after 1 s (not 10): the tests wait for that retry log line.
        lines += [f'bootstrap_token = "{token}"', "bootstrap_patience = 1"]
    (root / "etc/pitrix/agent.toml").write_text("\n".join(lines) + "\n")
    (root / "etc/confd/templates/web.tmpl").write_text(
        'id={{getv "/host/instance_id"}} port={{getv "/env/port"}}\n'
    )
    (root / "etc/confd/conf.d/web.toml").write_text(
        "[template]\n"
        'src = "web.tmpl"\n'
        'dest = "/etc/web.conf"\n'
        'keys = ["/host", "/env"]\n'
        'reload_cmd = "cat etc/web.conf > rendered.fifo"\n'
    )
    os.mkfifo(root / "rendered.fifo")


def vm_certificate(root: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((root / "etc/pitrix/agent.crt").read_bytes())


async def test_agent_with_only_a_token_bootstraps_renders_and_heartbeats(
    tls_metad: TLSMetad, tmp_path: Path
) -> None:
    """Started before the runtime mapped its instance, as at boot: it keeps asking, then gets in."""
    root = tmp_path / "vm"
    write_vm(root, tls_metad, token=TOKEN)
    agent = await AgentProcess.start(root, env={"PITRIX_VM_IP": tls_metad.ip})
    try:
        # No mapping carries the token yet: metad says not_registered, and the agent retries.
        await agent.wait_log("backend unavailable; retrying")
        assert not (root / "etc/pitrix/agent.crt").exists()
        before = await tls_metad.store.revision()
        await tls_metad.map_instance()
        await agent.wait_log("certificate bootstrapped")
        assert await read_fifo_line(root / "rendered.fifo") == "id=i-1 port=80\n"
        heartbeat = await tls_metad.next_put("/_pitrix/status/c1/i-1/heartbeat", before)
        assert heartbeat
        cert = vm_certificate(root)
        subject = pki.Subject.of(cert.subject)
        assert (subject.cn, subject.o, subject.ou) == ("i-1", OWNER, "c1")
        tls_metad.issuer.verify(cert)
        assert stat.S_IMODE((root / "etc/pitrix/agent.key").stat().st_mode) == 0o600
        # A change reaches the agent over mutual TLS (the held long-poll wakes).
        await tls_metad.manage.put_data("/clusters/c1/env/web", {"port": "8080"})
        assert await read_fifo_line(root / "rendered.fifo") == "id=i-1 port=8080\n"
    finally:
        assert await agent.terminate() == 0, agent.tail


async def test_agent_renews_a_short_lived_certificate_and_keeps_working(
    tls_metad: TLSMetad, tmp_path: Path
) -> None:
    """A certificate pushed into the VM (no token) that reaches 2/3 of its life while the agent runs."""
    root = tmp_path / "vm"
    write_vm(root, tls_metad, token=None)
    await tls_metad.map_instance()
    # Short enough that two thirds of it pass while the agent runs (however the backdating of
    # pki.BACKDATE is counted), long enough that the agent starts before it expires.
    lifetime = dt.timedelta(seconds=12)
    short = tls_metad.issuer.issue_instance("i-1", OWNER, "c1", lifetime=lifetime)
    short.write(root / "etc/pitrix/agent.crt", root / "etc/pitrix/agent.key", chain=tls_metad.issuer.cert_pem)
    agent = await AgentProcess.start(root, env={"PITRIX_VM_IP": tls_metad.ip})
    try:
        assert await read_fifo_line(root / "rendered.fifo") == "id=i-1 port=80\n"
        await agent.wait_log("certificate renewed", timeout=60.0)
        renewed = vm_certificate(root)
        assert renewed.serial_number != short.serial
        assert renewed.not_valid_after_utc - renewed.not_valid_before_utc > lifetime + pki.BACKDATE
        assert pki.Subject.of(renewed.subject) == short.subject
        # After the swap the agent still reads (its held long-poll included) and reports.
        before = await tls_metad.store.revision()
        await tls_metad.manage.put_data("/clusters/c1/env/web", {"port": "8081"})
        assert await read_fifo_line(root / "rendered.fifo", timeout=60.0) == "id=i-1 port=8081\n"
        # Reports too (a heartbeat of the same run writes nothing new, so its applied report).
        assert await tls_metad.next_put("/_pitrix/status/c1/i-1/applied", before)
    finally:
        assert await agent.terminate() == 0, agent.tail


async def test_a_wrong_token_gets_nothing(tls_metad: TLSMetad, tmp_path: Path) -> None:
    root = tmp_path / "vm"
    write_vm(root, tls_metad, token="not-" + TOKEN)
    await tls_metad.map_instance()
    agent = await AgentProcess.start(root, env={"PITRIX_VM_IP": tls_metad.ip})
    try:
        entry = await agent.wait_log("backend unavailable; retrying")
        assert "bootstrap" in str(entry.get("error"))
        assert not (root / "etc/pitrix/agent.crt").exists()
    finally:
        assert await agent.terminate() == 0, agent.tail


async def test_light_agent_bootstraps_in_process(tls_metad: TLSMetad, tmp_path: Path) -> None:
    """The simulator's light mode runs the same agent code in its own process, from the same files."""
    root = tmp_path / "vm"
    write_vm(root, tls_metad, token=TOKEN)
    await tls_metad.map_instance()
    environ = {"PITRIX_VM_ID": "i-1", "PITRIX_VM_IP": tls_metad.ip, "PITRIX_VM_ROOT": str(root)}
    light = await LightAgent.start_if_configured(root, environ)
    assert light is not None
    try:
        assert await read_fifo_line(root / "rendered.fifo") == "id=i-1 port=80\n"
        subject = pki.Subject.of(vm_certificate(root).subject)
        assert (subject.cn, subject.o, subject.ou) == ("i-1", OWNER, "c1")
    finally:
        await light.stop()
