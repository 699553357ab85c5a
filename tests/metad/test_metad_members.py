"""pitrix-metad as one member of a metadata cluster of several: its embedded etcd joins the others
over mutual TLS (``--etcd-peer``, peer certificates from one CA), so what one metad is told the
others serve. Debian's etcd 3.4 (a multi-member cluster on the wheel's 3.5.1 can lose writes)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from pitrix import pki
from pitrix.backoff import Backoff
from pitrix.metad.client import MetadClientError, MetadManagementClient
from pitrix.metad.issuer_bootstrap import (
    IssuerBootstrap,
    PeerRequest,
    certificate_proof,
    load_members,
    members_document,
    members_proof,
    peer_certificate_proof,
    proof_key,
)
from pitrix.metad.issuer_share import ShareError, share
from pitrix.runtime import issuer_exchange
from pitrix.runtime.authority import Authority, etcd_peers_ca, management_client_context, sign_peer
from pitrix.sealing import Sealer
from pitrix.store import Store
from pitrix.store.embedded import BINARY_VARIABLE

from .conftest import Net

SYSTEM_ETCD = Path("/usr/bin/etcd")
DEADLINE = 60.0
T = TypeVar("T")


def _port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _base(ip: str = "127.0.0.1") -> list[str]:
    return ["--listen-ip", ip, "--embedded-etcd", "--state-dir", "s", "--etcd-peer-port", "2380"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--etcd-member", "m0"], "go with --etcd-peer"),
        (["--etcd-peer", "m0=https://127.0.0.1:2380"], "give --etcd-peer-ca"),
        (["--etcd-peer", "m0=http://127.0.0.1:2380", "--etcd-member", "m0"], "NAME=https://ip:port"),
        (
            [
                "--etcd-peer",
                "m0=https://127.0.0.1:2380",
                "--etcd-peer",
                "m0=https://127.0.0.2:2380",
                "--etcd-member",
                "m0",
            ],
            "twice",
        ),
        (["--etcd-peer", "m0=https://127.0.0.1:2380", "--etcd-member", "m1"], "must name this member"),
        (["--etcd-peer", "m0=https://127.0.0.1:2381", "--etcd-member", "m0"], "peer URL is"),
    ],
)
def test_member_flags_are_checked(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from pitrix.metad.main import parse_args

    tls = ["--etcd-peer-ca", "ca", "--etcd-peer-cert", "c", "--etcd-peer-key", "k"]
    if "give --etcd-peer-ca" in message or "go with" in message:
        tls = []
    with pytest.raises(SystemExit):
        parse_args([*_base(), *extra, *tls])
    assert message in capsys.readouterr().err


def test_member_flags_describe_the_members() -> None:
    from pitrix.metad.main import parse_args

    tls = ["--etcd-peer-ca", "ca", "--etcd-peer-cert", "c", "--etcd-peer-key", "k"]
    peers = ["--etcd-peer", "m0=https://127.0.0.1:2380", "--etcd-peer", "m1=https://127.0.0.2:2380"]
    args = parse_args([*_base(), *peers, *tls, "--etcd-member", "m0", "--etcd-cluster-state", "existing"])
    assert args.etcd_peers.initial_cluster() == "m0=https://127.0.0.1:2380,m1=https://127.0.0.2:2380"
    assert args.etcd_peers.state == "existing" and args.etcd_peers.tls.cert_file == Path("c")
    assert parse_args(_base()).etcd_peers is None
    # A metadata VM: the list comes with the certificates; its own peer URL is what it must say.
    vm = parse_args(
        [*_base(), "--issuer-bootstrap-token-file", "t", "--etcd-member", "m1", "--etcd-peer-ca", "ca"]
    )
    assert vm.etcd_member_mode and vm.etcd_peers is None and vm.etcd_peer_url == "https://127.0.0.1:2380"
    assert vm.etcd_peer_cert == Path("s/issuer/peer.pem")


async def test_three_metads_bootstrapped_by_pitrixd_serve_one_metadata_cluster(
    net: Net, tmp_path: Path, store: Store, sealer: Sealer
) -> None:
    """Each member VM's metad makes its peer key and offers its CSR with the proof of its own
    one-time token, the first member also its issuer's; pitrixd signs the peer certificates with its
    etcd peers CA (CN pinned to this cluster) and the issuer with the root. The three etcds form one
    cluster, the joining members take the first one's issuer from it, and what pitrixd writes
    through one metad the others serve, each with a server certificate from that one issuer. The
    members' list reaches them with the certificates, as on a cloud, where the members' addresses
    are known only once all of them run."""
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    authority = await Authority.load(store, sealer)
    management = await authority.management_ca(store, sealer)
    peers_ca = await etcd_peers_ca(store, sealer)
    assert (await etcd_peers_ca(store, sealer)).cert_pem == peers_ca.cert_pem  # made once, kept
    for name, pem in (
        ("root", authority.ca_pem()),
        ("management", management.cert_pem),
        ("peers", peers_ca.cert_pem),
    ):
        (tmp_path / f"{name}.pem").write_bytes(pem)
    ips = [net.ip(200 + n) for n in range(3)]
    names = [f"m{n}" for n in range(3)]
    peer_ports, manage_ports = [_port(ip) for ip in ips], [_port(ip) for ip in ips]
    members = {n: f"https://{ip}:{p}" for n, ip, p in zip(names, ips, peer_ports, strict=True)}
    env = {**os.environ, BINARY_VARIABLE: str(SYSTEM_ETCD)}
    processes: list[asyncio.subprocess.Process] = []
    try:

        async def start(name: str, ip: str, peer_port: int, manage_port: int) -> asyncio.subprocess.Process:
            (tmp_path / f"{name}.token").write_text(f"token-of-{name}-" + "t" * 30 + "\n")
            with (tmp_path / f"{name}.log").open("ab") as err:
                return await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "pitrix.metad.main",
                    "--listen-ip", ip, "--instance-port", "0", "--manage-port", str(manage_port),
                    "--root-ca", str(tmp_path / "root.pem"),
                    "--management-ca", str(tmp_path / "management.pem"),
                    "--issuer-bootstrap-token-file", str(tmp_path / f"{name}.token"),
                    "--embedded-etcd", "--state-dir", str(tmp_path / f"{name}-{ip}"),
                    "--etcd-client-port", "0", "--etcd-peer-port", str(peer_port),
                    "--etcd-member", name, "--etcd-cluster-token", "cluster-x",
                    "--etcd-peer-ca", str(tmp_path / "peers.pem"), "--etcd-peer-cn", "cluster-x",
                    "--etcd-start-timeout", str(DEADLINE),
                    *(["--issuer-from-cluster"] if name != "m0" or ip != ips[0] else []),
                    stdout=asyncio.subprocess.PIPE, stderr=err, env=env,
                )  # fmt: skip

        for member in zip(names, ips, peer_ports, manage_ports, strict=True):
            processes.append(await start(*member))

        async def bootstrap(
            name: str, ip: str, port: int, members: dict[str, str] = members, state: str = "new"
        ) -> bytes:
            """pitrixd's side: sign what the member asks for; its issuer certificate if it made one."""
            base = f"https://{ip}:{port}"
            token_sha256 = hashlib.sha256((f"token-of-{name}-" + "t" * 30).encode()).hexdigest()
            deadline = asyncio.get_running_loop().time() + DEADLINE
            backoff = Backoff(0.02, 0.5)
            while True:
                try:
                    offer = await issuer_exchange.fetch_offer(base, token_sha256)
                    break
                except issuer_exchange.NotReady:
                    assert asyncio.get_running_loop().time() < deadline, f"{name} never offered its CSRs"
                    await asyncio.sleep(backoff.next())
            assert offer.peer_csr, "a member of several offers a peer CSR"
            assert bool(offer.csr) == (ip == ips[0]), "only the first member makes an issuer"
            issuer = authority.sign_issuer(offer.csr, "alice", "sim") if offer.csr else b""
            peer = sign_peer(peers_ca, offer.peer_csr, ip, "cluster-x")
            await issuer_exchange.push_certificate(
                base, token_sha256, issuer, peer_cert_pem=peer, members=members, state=state
            )
            return issuer

        issuer, _, _ = await asyncio.gather(
            *(bootstrap(*m) for m in zip(names, ips, manage_ports, strict=True))
        )
        for name, ip in zip(names, ips, strict=True):
            stored = pki.cert_from_pem((tmp_path / f"{name}-{ip}" / "issuer" / "peer.pem").read_bytes())
            assert stored.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cluster-x"
            assert ip in {
                str(a)
                for a in stored.extensions.get_extension_for_class(
                    x509.SubjectAlternativeName
                ).value.get_values_for_type(x509.IPAddress)
            }

        async def ready(process: asyncio.subprocess.Process) -> dict[str, str]:
            assert process.stdout is not None
            line = await process.stdout.readline()
            assert line, "a metad exited before it served: see its log under the test's tmp_path"
            answer: dict[str, str] = json.loads(line)
            return answer

        urls = await asyncio.wait_for(asyncio.gather(*(ready(p) for p in processes)), DEADLINE)

        def manage(n: int) -> MetadManagementClient:
            # Verifies the member's server certificate against the first member's issuer.
            context = management_client_context(issuer, management)
            return MetadManagementClient(urls[n]["manage_url"], ssl=context)

        async with manage(0) as client:
            await client.put_data("/clusters/c1/env/web/port", "8080")
        for n in (1, 2):
            async with manage(n) as client:
                assert await client.get_data("/clusters/c1/env/web/port") == "8080"
        for name, ip in zip(names[1:], ips[1:], strict=True):
            assert (tmp_path / f"{name}-{ip}" / "issuer" / "issuer.pem").read_bytes() == pki.cert_to_pem(
                pki.cert_from_pem(issuer)
            )

        # m2's VM is lost: pitrixd removes it through a surviving metad and adds the new VM's peer
        # URL; the answer is the list the new member joins with, as `existing`.
        async with manage(0) as client:
            listed = await _membership(client.etcd_members)
            assert sorted(m["name"] for m in listed["members"]) == names
            assert all(m["started"] for m in listed["members"])
            assert [m["name"] for m in listed["members"] if m["local"]] == ["m0"]
            with pytest.raises(MetadClientError) as refused:
                await client.etcd_member_remove("m0")  # its own member: ask another
            assert refused.value.status == 409
            for body, field in (({"name": "m2", "peer_url": "http://x:1"}, "peer_url"), ({}, "name")):
                with pytest.raises(MetadClientError, match=field) as refused:
                    await client._request("POST", "/v1/etcd/members", body)
                assert refused.value.status == 400
            processes[2].terminate()  # metad and its etcd: the VM is gone
            await processes[2].wait()
            assert await _membership(partial(client.etcd_member_remove, "m2"))
            assert not await _membership(partial(client.etcd_member_remove, "m2"))  # a re-run: done
            new_ip = net.ip(203)
            url = f"https://{new_ip}:{_port(new_ip)}"
            joined = await _membership(partial(client.etcd_member_add, "m2", url))
            assert joined == {"m0": members["m0"], "m1": members["m1"], "m2": url}
            assert await _membership(partial(client.etcd_member_add, "m2", url)) == joined  # a re-run
            # The new member starting as `existing` with that list: tests/e2e/test_metadata_members.py.
            listed = await _membership(client.etcd_members)
        assert sorted(m["name"] for m in listed["members"] if m["started"]) == ["m0", "m1"]
        assert [m["peer_urls"] for m in listed["members"] if not m["started"]] == [[url]]
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await process.wait()


async def _membership(call: Callable[[], Awaitable[T]]) -> T:
    """etcd refuses a member change until its members have been connected a few seconds (503)."""
    deadline = asyncio.get_running_loop().time() + DEADLINE
    backoff = Backoff(0.1, 1.0)
    while True:
        try:
            return await call()
        except MetadClientError as exc:
            if exc.status != 503 or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(backoff.next())


def test_a_member_s_peer_certificate_is_checked_before_it_is_stored(tmp_path: Path) -> None:
    root = pki.CertificateAuthority.create("root")
    peers_ca = pki.CertificateAuthority.create("peers")
    token = "t" * 40
    exchange = IssuerBootstrap(tmp_path, token, root.cert_pem, PeerRequest(peers_ca.cert_pem))
    offer = exchange.offer()
    key = proof_key(token)
    issuer = pki.cert_to_pem(root.sign_subordinate("issuer", exchange.key.public_key()))  # type: ignore[arg-type]
    good_peer = sign_peer(peers_ca, offer["peer_csr"].encode(), "127.0.0.5", "cluster-x")
    other = sign_peer(
        pki.CertificateAuthority.create("other"), offer["peer_csr"].encode(), "127.0.0.5", "cluster-x"
    )

    def doc(peer: bytes | None, peer_proof: str | None = None) -> dict[str, str]:
        body = {"certificate": issuer.decode(), "proof": certificate_proof(key, issuer)}
        if peer is not None:
            body["peer_certificate"] = peer.decode()
            body["peer_proof"] = peer_proof or peer_certificate_proof(key, peer)
        return body

    with pytest.raises(pki.PKIError, match="peer_certificate"):
        exchange.accept(doc(None))
    with pytest.raises(PermissionError, match="peer_proof"):
        exchange.accept(doc(good_peer, "0" * 64))
    with pytest.raises(pki.PKIError, match="the peers' CA"):
        exchange.accept(doc(other))
    with pytest.raises(pki.PKIError, match="this member's peer key"):
        exchange.accept(
            doc(
                sign_peer(peers_ca, pki.make_csr(pki.generate_key(), pki.Subject("x", "y")), "127.0.0.5", "c")
            )
        )
    assert not exchange.complete()
    exchange.accept(doc(good_peer))
    assert not (tmp_path / "issuer" / "members.json").exists()  # no list asked for: the flags gave it
    assert exchange.complete()
    again = IssuerBootstrap(tmp_path, token, root.cert_pem, PeerRequest(peers_ca.cert_pem))
    assert again.complete()
    # A restart offers a CSR for the same peer key (ECDSA signatures differ, the key does not).
    assert again.peer_key is not None and exchange.peer_key is not None
    assert again.peer_key.public_key() == exchange.peer_key.public_key()


async def test_a_member_waiting_for_its_peers_stops_on_sigterm(net: Net, tmp_path: Path) -> None:
    """Its peers' VMs may never come: SIGTERM ends the wait for a quorum and the etcd with it."""
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    ip = net.ip(210)
    ca = pki.CertificateAuthority.create("metadata peers CA")
    (tmp_path / "peer-ca.pem").write_bytes(ca.cert_pem)
    ca.issue_server([ip, "127.0.0.1"], "etcd-m0", client_auth=True).write(
        tmp_path / "m.crt", tmp_path / "m.key"
    )
    port = _port(ip)
    state = tmp_path / "m0"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pitrix.metad.main",
        "--listen-ip", ip, "--instance-port", "0", "--manage-port", "0",
        "--legacy-source-ip", "--insecure-open-management-api",
        "--embedded-etcd", "--state-dir", str(state),
        "--etcd-client-port", "0", "--etcd-peer-port", str(port), "--etcd-member", "m0",
        f"--etcd-peer=m0=https://{ip}:{port}", f"--etcd-peer=m1=https://{net.ip(211)}:{port}",
        f"--etcd-peer=m2=https://{net.ip(212)}:{port}",
        "--etcd-peer-ca", str(tmp_path / "peer-ca.pem"), "--etcd-peer-cert", str(tmp_path / "m.crt"),
        "--etcd-peer-key", str(tmp_path / "m.key"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, BINARY_VARIABLE: str(SYSTEM_ETCD)},
    )  # fmt: skip
    try:
        backoff = Backoff(0.02, 0.5)
        async with asyncio.timeout(DEADLINE):
            # The member's etcd was started and waits for a quorum it will not get.
            while not (state / "etcd.pid.json").exists():
                assert process.returncode is None, "metad exited before it started its etcd"
                await asyncio.sleep(backoff.next())
        etcd_pid = json.loads((state / "etcd.pid.json").read_text())["pid"]
        process.terminate()
        out, _ = await asyncio.wait_for(process.communicate(), DEADLINE)
        assert process.returncode == 0 and out == b""
        with pytest.raises(ProcessLookupError):
            os.kill(etcd_pid, 0)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_cluster_s_issuer_is_published_once_and_adopted_by_every_other(
    store: Store, tmp_path: Path
) -> None:
    root = pki.CertificateAuthority.create("root")
    files = {}
    for name in ("first", "again", "joiner"):
        (tmp_path / name).mkdir()
        files[name] = (tmp_path / name / "issuer.pem", tmp_path / name / "issuer.key")
    for name in ("first", "again"):  # two members that each bootstrapped an issuer of their own
        issuer = root.issue_subordinate(name)
        files[name][0].write_bytes(issuer.cert_pem)
        files[name][1].write_bytes(pki.key_to_pem(issuer.key))
    with pytest.raises(ShareError, match="did not appear"):
        await share(store, *files["joiner"], mine=False, timeout=0.2)
    await share(store, *files["first"], mine=True, timeout=1.0)
    await share(store, *files["again"], mine=True, timeout=1.0)  # a first member made again adopts it
    await share(store, *files["joiner"], mine=False, timeout=1.0)
    for name in ("again", "joiner"):
        assert [p.read_bytes() for p in files[name]] == [p.read_bytes() for p in files["first"]]
        assert stat.S_IMODE(files[name][1].stat().st_mode) == 0o600
    mirrored, _ = await store.get_prefix("/")
    assert mirrored == []  # outside what the mirror (and so either API) reads


def test_a_member_s_list_of_peers_is_proven_and_names_it(tmp_path: Path) -> None:
    root, peers_ca, token = (
        pki.CertificateAuthority.create("root"),
        pki.CertificateAuthority.create("p"),
        "t" * 40,
    )
    me = "https://127.0.0.5:2380"
    request = PeerRequest(peers_ca.cert_pem, joins=True, name="m1", url=me)
    exchange = IssuerBootstrap(tmp_path, token, root.cert_pem, request)
    assert "csr" not in exchange.offer()  # a joining member makes no issuer
    key = proof_key(token)
    peer = sign_peer(peers_ca, exchange.offer()["peer_csr"].encode(), "127.0.0.5", "c")
    base = {"peer_certificate": peer.decode(), "peer_proof": peer_certificate_proof(key, peer)}

    def listed(
        members: dict[str, str], state: str = "existing", proof: str | None = None
    ) -> dict[str, object]:
        document = members_document(members, state)
        return {
            **base,
            "members": members,
            "state": state,
            "members_proof": proof or members_proof(key, document),
        }

    good = {"m0": "https://127.0.0.4:2380", "m1": me}
    with pytest.raises(pki.PKIError, match="must list this member 'm1'"):
        exchange.accept(listed({"m0": "https://127.0.0.4:2380", "m1": "https://127.0.0.9:2380"}))
    with pytest.raises(pki.PKIError, match="peer URL"):
        exchange.accept(listed({"m0": "http://127.0.0.4:2380", "m1": me}))
    with pytest.raises(pki.PKIError, match="state"):
        exchange.accept(listed(good, "rejoin"))
    with pytest.raises(PermissionError, match="members_proof"):
        exchange.accept(listed(good, proof="0" * 64))
    assert not exchange.complete()
    exchange.accept(listed(good))
    assert exchange.complete() and load_members(tmp_path / "issuer" / "members.json") == (good, "existing")


def test_a_member_s_token_hash_is_sealed_with_the_record() -> None:
    from pitrix.runtime.records import MetadataCluster, MetadataMember
    from pitrix.sealing import Sealer as RecordSealer
    from pitrix.sealing import SealingError

    sealer = RecordSealer.generate()
    hashes = ["a" * 64, "b" * 64]
    record = MetadataCluster(
        owner="o",
        runtime="r",
        name="pitrix-meta-o-r",
        ip="10.0.0.1",
        members=[
            MetadataMember(name=f"pitrix-meta-o-r-m{k}", ip=f"10.0.0.{k + 1}", bootstrap_sha256=h)
            for k, h in enumerate(hashes, 1)
        ],
    )
    stored = record.sealed(sealer)
    assert not any(h.encode() in stored for h in hashes)
    assert MetadataCluster.opened(stored, sealer) == record
    assert record.instance_urls == [f"http://10.0.0.{k}:8080" for k in (1, 2, 3)]
    # A hash sealed for one member does not open as another's.
    swapped = stored.replace(b"pitrix-meta-o-r-m1", b"pitrix-meta-o-r-mX")
    with pytest.raises(SealingError):
        MetadataCluster.opened(swapped, sealer)


def test_a_replacement_names_the_next_generation_and_peer_urls_are_checked() -> None:
    from pitrix.metad.membership import BadPeerURL, check_peer_url
    from pitrix.runtime.metadata_replace import Replacement, next_vm_name
    from pitrix.runtime.records import MetadataCluster, MetadataMember
    from pitrix.sealing import Sealer as RecordSealer

    record = MetadataCluster(
        owner="o", runtime="r", name="pitrix-meta-o-r", members=[MetadataMember(name="pitrix-meta-o-r-m1")]
    )
    assert next_vm_name(record, 0) == "pitrix-meta-o-r-m0-g1"
    assert next_vm_name(record, 1) == "pitrix-meta-o-r-m1-g1"
    again = record.model_copy(update={"vm": "pitrix-meta-o-r-m0-g1"})
    assert next_vm_name(again, 0) == "pitrix-meta-o-r-m0-g2" and again.vm_name == again.vm
    assert check_peer_url("https://10.0.0.1:2380/") == "https://10.0.0.1:2380"
    bad_urls = ("http://10.0.0.1:2380", "https://host:2380", "https://10.0.0.1", "https://10.0.0.1:2380/x", 7)
    for bad in bad_urls:
        with pytest.raises(BadPeerURL):
            check_peer_url(bad)
    sealer = RecordSealer.generate()
    job = Replacement(
        job_id="j", slot=0, reason="gone", lost_instance_id="i-1", lost_ip="10.0.0.1",
        vm_name="pitrix-meta-o-r-m0-g1", bootstrap_sha256="c" * 64,
    )  # fmt: skip
    stored = job.sealed(sealer, "o", "r")
    assert b"c" * 64 not in stored and Replacement.opened(stored, sealer, "o", "r") == job
    assert job.lost_peer_url == "https://10.0.0.1:2380" and job.etcd_name == "m0"
