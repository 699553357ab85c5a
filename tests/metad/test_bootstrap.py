"""An instance's first certificate: a bootstrap token exchanged at POST /self/bootstrap.

Real metad with mutual TLS, real etcd; the agent's side (``AgentCertificate``) fetches, stores and
renews its certificate against it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509

from pitrix import pki
from pitrix.agent.certificate import AgentCertificate
from pitrix.agent.errors import BackendError
from pitrix.agent.metad_client import MetadClient
from pitrix.metad import tls as metad_tls
from pitrix.metad.waiters import Waiter

from .tlsworld import TLSWorld

TOKEN = "tok-" + "x" * 40


def csr(cn: str = "anything", o: str | None = "usr-b", ou: str | None = "c3") -> str:
    return pki.make_csr(pki.generate_key(), pki.Subject(cn=cn, o=o, ou=ou)).decode()


async def give_token(world: TLSWorld, iid: str = "i-web2", token: str = TOKEN) -> None:
    mapping = await world.manage.get_mapping(iid)
    assert mapping is not None
    mapping["bootstrap_sha256"] = hashlib.sha256(token.encode()).hexdigest()
    await world.manage.put_mapping(iid, mapping)


def web2_ip(world: TLSWorld) -> str:
    """i-web2's address (the seeded world's): where its agent's connections come from."""
    host = world.metad.listen_ip.rsplit(".", 1)[0]
    return f"{host}.12"


async def post(world: TLSWorld, body: object, local_ip: str | None = None) -> tuple[int, dict[str, object]]:
    raw = json.dumps(body).encode()
    status, answer = await world.raw(
        None,
        "POST",
        "/self/bootstrap",
        body=raw,
        headers={"Content-Type": "application/json"},
        local_ip=local_ip or web2_ip(world),
    )
    return status, json.loads(answer)


async def test_a_token_nobody_registered_is_told_to_come_back(tls_world: TLSWorld) -> None:
    status, answer = await post(tls_world, {"token": TOKEN, "csr": csr()})
    assert (status, answer["reason"]) == (404, "not_registered")


async def test_the_token_buys_the_mappings_identity_whatever_the_csr_asks(tls_world: TLSWorld) -> None:
    await give_token(tls_world)
    status, answer = await post(tls_world, {"token": TOKEN, "csr": csr("i-x1", "usr-b", "c3")})
    assert status == 200, answer
    cert = x509.load_pem_x509_certificate(str(answer["certificate"]).encode())
    subject = pki.Subject.of(cert.subject)
    assert (subject.cn, subject.o, subject.ou) == ("i-web2", "usr-a", "c1")
    tls_world.ca.verify(cert)


@pytest.mark.parametrize(
    ("case", "body", "field"),
    [
        ("not an object", ["token"], "body"),
        ("no token", {"csr": "x"}, "token"),
        ("empty token", {"token": "", "csr": "x"}, "token"),
        ("no csr", {"token": TOKEN}, "csr"),
        ("csr not PEM", {"token": TOKEN, "csr": "hello"}, "csr"),
    ],
)
async def test_bad_requests_name_the_field(tls_world: TLSWorld, case: str, body: object, field: str) -> None:
    await give_token(tls_world)
    status, answer = await post(tls_world, body)
    assert (status, answer.get("field")) == (400, field), (case, answer)


async def test_a_wrong_token_and_a_revoked_instance_get_nothing(tls_world: TLSWorld) -> None:
    await give_token(tls_world)
    status, _ = await post(tls_world, {"token": TOKEN + "y", "csr": csr()})
    assert status == 404
    # From another address (i-web1's) the right token buys nothing: a leaked token is useless.
    status, answer = await post(
        tls_world, {"token": TOKEN, "csr": csr()}, local_ip=web2_ip(tls_world)[:-1] + "1"
    )
    assert status == 403 and "accepted only from" in str(answer["error"]), answer
    await tls_world.manage.revoke_instance("i-web2", "scaled in")
    status, answer = await post(tls_world, {"token": TOKEN, "csr": csr()})
    assert status == 403, answer


def agent_files(world: TLSWorld, folder: Path) -> tuple[Path, Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ca = folder / "ca.pem"
    ca.write_bytes(world.ca.cert_pem)
    return folder / "agent.crt", folder / "agent.key", ca


async def test_an_agent_bootstraps_then_reads_its_own_view(tls_world: TLSWorld, tmp_path: Path) -> None:
    cert, key, ca = agent_files(tls_world, tmp_path / "vm")
    client = MetadClient([tls_world.metad.instance_url], client_cert=cert, client_key=key, ca_file=ca,
                         bootstrap_token=TOKEN, bind_address=web2_ip(tls_world))  # fmt: skip
    try:
        with pytest.raises(BackendError, match="no certificate for the bootstrap token"):
            await client.get("/self/host")  # not mapped with the token yet: the agent retries later
        await give_token(tls_world)
        answer = await client.get("/self/host")
        assert answer.body["instance_id"] == "i-web2"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    finally:
        await client.close()
    # A restarted agent uses the stored certificate: the token is not needed again.
    again = MetadClient([tls_world.metad.instance_url], client_cert=cert, client_key=key, ca_file=ca)
    try:
        assert (await again.get("/self/host")).body["instance_id"] == "i-web2"
    finally:
        await again.close()


async def test_an_agent_renews_its_certificate_before_it_expires(tls_world: TLSWorld, tmp_path: Path) -> None:
    cert, key, ca = agent_files(tls_world, tmp_path / "vm")
    # A certificate already past two thirds of its (short) life.
    issued = tls_world.ca.issue_instance("i-web2", "usr-a", "c1", lifetime=dt.timedelta(minutes=2))
    issued.write(cert, key)
    first = x509.load_pem_x509_certificate(cert.read_bytes())
    certificate = AgentCertificate(cert, key, ca)
    certificate._not_before = first.not_valid_before_utc - dt.timedelta(minutes=10)  # backdated: due
    client = MetadClient([tls_world.metad.instance_url], client_cert=cert, client_key=key, ca_file=ca)
    client.certificate = certificate
    try:
        assert (await client.get("/self/host")).body["instance_id"] == "i-web2"
        await client.get("/self/host")  # the renewal happens before this request
        renewed = x509.load_pem_x509_certificate(cert.read_bytes())
        assert renewed.serial_number != first.serial_number
        assert renewed.not_valid_after_utc > first.not_valid_after_utc
        assert certificate.generation == 1
        assert (await client.get("/self/host")).body["instance_id"] == "i-web2"  # on the new one
    finally:
        await client.close()


async def test_metad_issues_its_own_server_certificate_from_the_issuer(tmp_path: Path) -> None:
    root = pki.CertificateAuthority.create()
    issuer = root.issue_subordinate("metadata usr-a/sim")
    (tmp_path / "issuer.pem").write_bytes(issuer.cert_pem)
    tls = metad_tls.self_issued(issuer, "127.0.0.1", tmp_path / "issuer.pem", tmp_path / "tls")
    chain = tls.cert_file.read_bytes()
    leaf = x509.load_pem_x509_certificates(chain)
    assert [pki.Subject.of(c.subject).cn for c in leaf] == ["pitrix-metad", "metadata usr-a/sim"]
    issuer.verify(leaf[0])
    assert stat.S_IMODE(tls.key_file.stat().st_mode) == 0o600


async def _served_serial(url: str, ca: Path) -> int:
    """The serial of the server certificate a fresh handshake with ``url`` is shown."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = pki.client_context(ca)  # trusts the issuer alone (a partial chain)
    _reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_self_issued_server_certificate_is_renewed_while_metad_runs(
    store: object, tmp_path: Path
) -> None:
    """Renewed at 2/3 of its life: new handshakes get the new one, a held connection goes on."""
    from pitrix.metad.client import MetadManagementClient
    from pitrix.metad.server import Metad

    issuer = pki.CertificateAuthority.create().issue_subordinate("metadata cluster")
    (tmp_path / "issuer.pem").write_bytes(issuer.cert_pem)
    lifetime = dt.timedelta(seconds=6)
    tls = metad_tls.self_issued(issuer, "127.0.0.1", tmp_path / "issuer.pem", tmp_path / "tls", lifetime)
    async with Metad(store, "127.0.0.1", 0, 0, tls=tls) as metad:  # type: ignore[arg-type]
        first = await _served_serial(metad.instance_url, tmp_path / "issuer.pem")
        issuer.issue_management().write(tmp_path / "rt.crt", tmp_path / "rt.key")
        async with MetadManagementClient(
            metad.manage_url, ca_file=tmp_path / "issuer.pem", cert_file=tmp_path / "rt.crt",
            key_file=tmp_path / "rt.key",
        ) as manage:  # fmt: skip
            await manage.put_data("/clusters/c1/cluster", {"owner": "o"})  # its connection is now open
            await asyncio.wait_for(metad.server_renewed.wait(), 30)
            for url in (metad.instance_url, metad.manage_url):
                assert await _served_serial(url, tmp_path / "issuer.pem") != first
            await manage.put_data("/clusters/c1/cluster", {"owner": "p"})
            assert await manage.get_data("/clusters/c1/cluster/owner") == "p"
        renewed = x509.load_pem_x509_certificates(tls.cert_file.read_bytes())[0]
        issuer.verify(renewed)
        assert renewed.serial_number != first


async def test_a_token_hash_is_validated_and_one_instances(tls_world: TLSWorld) -> None:
    from pitrix.metad.client import MetadClientError

    await give_token(tls_world, "i-web2")
    mapping = await tls_world.manage.get_mapping("i-web1")
    assert mapping is not None
    with pytest.raises(MetadClientError) as exc:
        await tls_world.manage.put_mapping(
            "i-web1", {**mapping, "bootstrap_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}
        )
    assert exc.value.status == 409
    with pytest.raises(MetadClientError) as exc:
        await tls_world.manage.put_mapping("i-web1", {**mapping, "bootstrap_sha256": "not-hex"})
    assert exc.value.status == 400 and "bootstrap_sha256" in str(exc.value)


async def test_a_leaf_without_its_chain_is_accepted_under_a_root_client_ca(
    store: object, tmp_path: Path
) -> None:
    """--client-ca is the root, the instance shows only the leaf its issuer signed."""
    from pitrix.metad.server import Metad

    root = pki.CertificateAuthority.create()
    issuer = root.issue_subordinate("metadata cluster")
    (tmp_path / "root.pem").write_bytes(root.cert_pem)
    tls = metad_tls.self_issued(issuer, "127.0.0.1", tmp_path / "root.pem", tmp_path / "tls")
    async with Metad(store, "127.0.0.1", 0, 0, tls=tls) as metad:  # type: ignore[arg-type]
        issuer.issue_management().write(tmp_path / "rt.crt", tmp_path / "rt.key")  # leaf only
        from pitrix.metad.client import MetadManagementClient

        async with MetadManagementClient(
            metad.manage_url,
            ca_file=tmp_path / "root.pem",
            cert_file=tmp_path / "rt.crt",
            key_file=tmp_path / "rt.key",
        ) as manage:
            await manage.put_data("/clusters/c9/cluster", {"owner": "usr-z"})
            assert await manage.get_data("/clusters/c9/cluster/owner") == "usr-z"


def test_renewal_is_due_at_two_thirds_of_the_life_since_issue(tmp_path: Path) -> None:
    """The CA backdates not_before; a short certificate must not count as due from the start."""
    ca = pki.CertificateAuthority.create()
    ca.issue_instance("i-1", "o", "c", lifetime=dt.timedelta(minutes=3)).write(
        tmp_path / "a.crt", tmp_path / "a.key"
    )
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    certificate = AgentCertificate(tmp_path / "a.crt", tmp_path / "a.key", tmp_path / "ca.pem")
    assert certificate._not_before is not None and certificate._not_after is not None
    issued = certificate._not_before + pki.BACKDATE
    assert not _due_at(certificate, issued + dt.timedelta(seconds=100))
    assert _due_at(certificate, issued + dt.timedelta(seconds=125))


def _due_at(certificate: AgentCertificate, when: dt.datetime) -> bool:
    import asyncio

    async def check() -> bool:
        return certificate._renewal_due(when)

    return asyncio.run(check())


# -- one-time, short-lived tokens; renewal replaces ------------------------------------------------


async def test_a_used_token_buys_nothing_more(tls_world: TLSWorld) -> None:
    """Replayed after its agent used it: 409, and no second certificate for anybody."""
    await give_token(tls_world)
    key = pki.generate_key()
    mine = pki.make_csr(key, pki.Subject(cn="bootstrap")).decode()
    status, first = await post(tls_world, {"token": TOKEN, "csr": mine})
    assert status == 200, first
    status, answer = await post(tls_world, {"token": TOKEN, "csr": csr()})
    assert (status, answer.get("reason")) == (409, "token_used"), answer
    assert "already used" in str(answer["error"])
    # Its own agent, whose answer was lost, asking again with the same key: the same certificate.
    status, again = await post(tls_world, {"token": TOKEN, "csr": mine})
    assert status == 200 and again["serial"] == first["serial"], again
    # Written again by the runtime (a start, a recover), the mapping does not revive the token.
    await give_token(tls_world)
    status, answer = await post(tls_world, {"token": TOKEN, "csr": csr()})
    assert status == 409, answer


async def test_two_uses_at_once_buy_one_certificate(tls_world: TLSWorld) -> None:
    await give_token(tls_world)
    bodies = [{"token": TOKEN, "csr": csr()} for _ in range(6)]
    answers = await asyncio.gather(*(post(tls_world, body) for body in bodies))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] + [409] * 5, answers
    issued = await tls_world.manage.get_data("/_pitrix/issued/i-web2")
    winner = next(answer for status, answer in answers if status == 200)
    assert json.loads(str(issued))["serial"] == winner["serial"]


async def test_an_expired_token_is_refused(tls_world: TLSWorld) -> None:
    mapping = await tls_world.manage.get_mapping("i-web2")
    assert mapping is not None
    mapping["bootstrap_sha256"] = hashlib.sha256(TOKEN.encode()).hexdigest()
    mapping["bootstrap_expires"] = time.time() - 1
    await tls_world.manage.put_mapping("i-web2", mapping)
    status, answer = await post(tls_world, {"token": TOKEN, "csr": csr()})
    assert (status, answer.get("reason")) == (403, "token_expired"), answer
    mapping["bootstrap_expires"] = time.time() + 600
    await tls_world.manage.put_mapping("i-web2", mapping)
    status, answer = await post(tls_world, {"token": TOKEN, "csr": csr()})
    assert status == 200, answer


@pytest.mark.parametrize("expires", ["soon", -5, 0, True, float("inf")])
async def test_a_token_expiry_is_validated(tls_world: TLSWorld, expires: object) -> None:
    from pitrix.metad.client import MetadClientError

    mapping = await tls_world.manage.get_mapping("i-web2")
    assert mapping is not None
    mapping["bootstrap_sha256"] = hashlib.sha256(TOKEN.encode()).hexdigest()
    mapping["bootstrap_expires"] = expires
    with pytest.raises(MetadClientError) as exc:
        await tls_world.manage.put_mapping("i-web2", mapping)
    assert exc.value.status == 400 and "bootstrap_expires" in str(exc.value)


async def _renew(world: TLSWorld, who: str, key: pki.PrivateKey) -> tuple[int, dict[str, object]]:
    body = json.dumps({"csr": pki.make_csr(key, pki.Subject("i-web2", "usr-a", "c1")).decode()})
    status, raw = await world.raw(
        world.creds[who],
        "POST",
        "/self/cert",
        body=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    return status, json.loads(raw)


@pytest.mark.parametrize("tls_world", [1.0], indirect=True)
async def test_a_renewed_certificate_is_refused_after_the_grace(tls_world: TLSWorld) -> None:
    old = tls_world.creds["i-web2"]
    key = pki.generate_key()
    status, answer = await _renew(tls_world, "i-web2", key)
    assert status == 200, answer
    status, _ = await tls_world.get("i-web2", "/self/host")
    assert status == 200  # within the grace the replaced certificate still works
    # The replaced certificate cannot renew again (a stolen one would mint successors)...
    status, refused = await _renew(tls_world, "i-web2", pki.generate_key())
    assert status == 409, refused
    # ... but a renewal whose answer was lost gets its certificate again, for the same key.
    status, again = await _renew(tls_world, "i-web2", key)
    assert status == 200 and again["serial"] == answer["serial"], again
    mirror = tls_world.metad.mirror
    revoked = f"/_pitrix/revoked/{pki.serial_hex(old.serial)}"
    deadline = asyncio.get_running_loop().time() + 10
    while mirror.tree.live(revoked) is None:
        assert asyncio.get_running_loop().time() < deadline, "the replaced certificate was never revoked"
        waiter = Waiter([revoked])
        mirror.waiters.add(waiter)
        try:
            if mirror.tree.live(revoked) is None:
                await asyncio.wait({waiter.future}, timeout=10)
        finally:
            mirror.waiters.remove(waiter)
    status, body = await tls_world.get("i-web2", "/self/host")
    assert status == 403 and "revoked" in str(body), body
    # The successor works.
    cert_pem = str(answer["certificate"]).encode()
    tls_world.save("i-web2-new", pki.Issued(x509.load_pem_x509_certificate(cert_pem), key))
    status, body = await tls_world.get("i-web2-new", "/self/host")
    assert status == 200 and body["instance_id"] == "i-web2", body
