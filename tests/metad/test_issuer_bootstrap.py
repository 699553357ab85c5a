"""A metad that makes its issuer's key itself and buys the issuer's certificate with a one-time token.

A real pitrix-metad process (embedded etcd) against pitrixd's side of the exchange
(``pitrix.runtime.issuer_exchange``) and pitrixd's authority in a real etcd.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import socket
import ssl
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pitrix import pki
from pitrix.backoff import Backoff
from pitrix.metad.client import MetadManagementClient
from pitrix.runtime import issuer_exchange
from pitrix.runtime.authority import Authority, management_client_context
from pitrix.sealing import Sealer
from pitrix.store import Store

DEADLINE = 30.0
TOKEN = "issuer-token-" + "z" * 30


def _free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


async def _start(tmp_path: Path, ip: str, port: int, with_token: bool = True) -> asyncio.subprocess.Process:
    args = [
        sys.executable, "-m", "pitrix.metad.main", "--listen-ip", ip, "--instance-port", "0",
        "--manage-port", str(port), "--embedded-etcd", "--state-dir", str(tmp_path / "state"),
        "--etcd-client-port", "0", "--etcd-peer-port", "0", "--root-ca", str(tmp_path / "root.pem"),
        "--management-ca", str(tmp_path / "management.pem"),
        "--issuer-bootstrap-token-file", str(tmp_path / "token"),
    ]  # fmt: skip
    return await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), DEADLINE)


async def _csr(base: str, token_sha256: str) -> bytes:
    """The CSR, once the waiting metad answers (it starts a moment after its process)."""
    deadline = asyncio.get_running_loop().time() + DEADLINE
    backoff = Backoff(0.02, 0.5)
    while True:
        try:
            return await issuer_exchange.fetch_csr(base, token_sha256)
        except issuer_exchange.NotReady:
            assert asyncio.get_running_loop().time() < deadline, "metad never offered its CSR"
            await asyncio.sleep(backoff.next())


class Bootstrapped:
    def __init__(
        self,
        ready: dict[str, Any],
        issuer_pem: bytes,
        authority: Authority,
        management: Any,
        process: asyncio.subprocess.Process | None = None,
    ) -> None:
        self.ready, self.issuer_pem, self.authority, self.management = (
            ready,
            issuer_pem,
            authority,
            management,
        )
        self.process = process

    def manage(self) -> MetadManagementClient:
        ctx = management_client_context(self.issuer_pem, self.management)
        return MetadManagementClient(self.ready["manage_url"], ssl=ctx)


@pytest.fixture
async def bootstrapped(store: Store, net: Any, tmp_path: Path, sealer: Sealer) -> AsyncIterator[Bootstrapped]:
    authority = await Authority.load(store, sealer)
    management = await authority.management_ca(store, sealer)
    (tmp_path / "root.pem").write_bytes(authority.ca_pem())
    (tmp_path / "management.pem").write_bytes(management.cert_pem)
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = _free_port(net.metad_ip)
    process = await _start(tmp_path, net.metad_ip, port)
    try:
        base = f"https://{net.metad_ip}:{port}"
        token_sha256 = hashlib.sha256(TOKEN.encode()).hexdigest()
        # A CSR whose proof is not of the token pitrixd gave this VM is never signed.
        with pytest.raises(issuer_exchange.ExchangeError, match="proof"):
            await _csr(base, hashlib.sha256(b"another token").hexdigest())
        csr = await _csr(base, token_sha256)
        cert = authority.sign_issuer(csr, "alice", "sim")
        # A certificate without the token's proof is refused, naming the field.
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        async with (
            aiohttp.ClientSession() as session,
            session.put(
                base + "/v1/issuer-bootstrap", json={"certificate": cert.decode(), "proof": "0" * 64}, ssl=ctx
            ) as response,
        ):
            assert (response.status, (await response.json())["field"]) == (403, "proof")
            async with session.get(base + "/v1/data/", ssl=ctx) as waiting:
                assert waiting.status == 503  # nothing but the exchange answers meanwhile
        await issuer_exchange.push_certificate(base, token_sha256, cert)
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), DEADLINE))
        assert ready["manage_url"] == base
        yield Bootstrapped(ready, cert, authority, management, process)
    finally:
        await _stop(process)


async def _instance_get(url: str, ctx: ssl.SSLContext, ip: str) -> int:
    connector = aiohttp.TCPConnector(ssl=ctx, local_addr=(ip, 0))
    try:
        async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as response:
            return response.status
    except (aiohttp.ClientError, ssl.SSLError, OSError):
        return 0  # refused at the handshake


async def test_the_issuer_is_born_on_the_vm_and_instances_chain_to_it(
    bootstrapped: Bootstrapped, net: Any, tmp_path: Path
) -> None:
    state = tmp_path / "state" / "issuer"
    assert stat.S_IMODE((state / "issuer.key").stat().st_mode) == 0o600
    assert not (tmp_path / "token").exists()  # spent, and gone
    issuer_cert = pki.cert_from_pem(bootstrapped.issuer_pem)
    async with bootstrapped.manage() as manage:
        assert (await manage.healthz())["ok"] is True
        await manage.put_data("/clusters/c1/cluster", {"owner": "alice"})
        token = "instance-token-" + "y" * 30
        await manage.put_mapping(
            "i-1",
            {"cluster_id": "c1", "role": "web", "ip": net.ip(1),
             "bootstrap_sha256": hashlib.sha256(token.encode()).hexdigest()},
        )  # fmt: skip
    (tmp_path / "issuer.pem").write_bytes(bootstrapped.issuer_pem)
    key = pki.generate_key()
    csr = pki.make_csr(key, pki.Subject("bootstrap")).decode()
    trust = pki.client_context(tmp_path / "issuer.pem")
    connector = aiohttp.TCPConnector(ssl=trust, local_addr=(net.ip(1), 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            bootstrapped.ready["instance_url"] + "/self/bootstrap", json={"token": token, "csr": csr}
        ) as r,
    ):
        assert r.status == 200, await r.text()
        answer = await r.json()
    leaf = pki.Issued(pki.cert_from_pem(str(answer["certificate"]).encode()), key)
    leaf.cert.verify_directly_issued_by(issuer_cert)
    leaf.write(tmp_path / "i1.crt", tmp_path / "i1.key")
    mine = pki.client_context(tmp_path / "issuer.pem", tmp_path / "i1.crt", tmp_path / "i1.key")
    url = bootstrapped.ready["instance_url"] + "/self/host"
    assert await _instance_get(bootstrapped.ready["instance_url"] + "/self", mine, net.ip(1)) == 200
    # The same identity from another issuer under the same root (another owner's metadata
    # cluster): refused at the handshake.
    other = bootstrapped.authority.root.issue_subordinate("pitrix metadata mallory/sim")
    other.issue_instance("i-1", "alice", "c1").write(
        tmp_path / "o.crt", tmp_path / "o.key", chain=other.cert_pem
    )
    forged = pki.client_context(tmp_path / "issuer.pem", tmp_path / "o.crt", tmp_path / "o.key")
    assert await _instance_get(url, forged, net.ip(1)) in (0, 403)
    # The runtime's management certificate is no instance identity, and an instance's
    # certificate does not open the management port.
    bootstrapped.management.issue_management().write(
        tmp_path / "m.crt", tmp_path / "m.key", chain=bootstrapped.management.cert_pem
    )
    runtime = pki.client_context(tmp_path / "issuer.pem", tmp_path / "m.crt", tmp_path / "m.key")
    assert await _instance_get(url, runtime, net.ip(1)) in (0, 403)
    mine.check_hostname = False
    assert await _instance_get(bootstrapped.ready["manage_url"] + "/v1/data/", mine, net.ip(1)) in (0, 403)


async def test_a_restarted_metad_serves_with_the_issuer_it_stored(
    bootstrapped: Bootstrapped, net: Any, tmp_path: Path
) -> None:
    port = int(bootstrapped.ready["manage_url"].rsplit(":", 1)[1])
    assert bootstrapped.process is not None
    await _stop(bootstrapped.process)  # it lets go of its port
    again = await _start(tmp_path, net.metad_ip, port)
    try:
        assert again.stdout is not None
        ready = json.loads(await asyncio.wait_for(again.stdout.readline(), DEADLINE))
        same = Bootstrapped(ready, bootstrapped.issuer_pem, bootstrapped.authority, bootstrapped.management)
        async with same.manage() as manage:
            assert (await manage.healthz())["ok"] is True
    finally:
        await _stop(again)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--issuer-key", "k", "--issuer-cert", "c"], "drop --issuer-cert, --issuer-key"),
        (["--legacy-source-ip"], "drop --legacy-source-ip"),
    ],
)
def test_the_bootstrap_flags_say_what_clashes(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pitrix.metad.main import parse_args

    base = [
        "--listen-ip",
        "127.0.0.1",
        "--embedded-etcd",
        "--state-dir",
        "s",
        "--issuer-bootstrap-token-file",
        "t",
    ]
    with pytest.raises(SystemExit):
        parse_args(base + extra)
    assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--listen-ip", "127.0.0.1", "--etcd", "http://x", "--issuer-bootstrap-token-file", "t"])
    assert "needs --state-dir" in capsys.readouterr().err
    args = parse_args(base)
    assert args.client_ca == args.issuer_cert and args.self_issued and not args.implicit_legacy
