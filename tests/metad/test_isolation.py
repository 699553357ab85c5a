"""Every way we could think of to read or write another cluster's or another owner's data: all refused.

The world (conftest ``tls_world``): owner usr-a has c1 (i-web1, i-web2, i-db1; links ``store`` → c2
and ``foreign`` → c3) and c2; owner usr-b has c3 (i-x1). c3 carries a marker that must never
appear in an answer to anyone but c3's own instances. Requests are written byte for byte, so the
traversal cases reach metad exactly as listed.
"""

from __future__ import annotations

import asyncio
import json
import ssl

import aiohttp
import pytest

from pitrix import pki
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad

from .conftest import Net, seed_world
from .tlsworld import TLSWorld

SECRET = "usr-b-secret-marker"


async def _plant_secret(world: TLSWorld) -> None:
    await world.manage.put_data("/clusters/c3/env/x", {"password": SECRET})
    await world.manage.put_data("/clusters/c3/cluster", {"note": SECRET})
    await world.manage.put_data("/_pitrix/status/c1/i-web2/health", {"ok": True, "error": "untouched"})


READ_ATTACKS: list[tuple[str, str, dict[str, str]]] = [
    ("plain path to another owner's cluster", "/clusters/c3", {}),
    ("plain path to the whole keyspace", "/clusters", {}),
    ("dot-dot out of /self", "/self/../clusters/c3", {}),
    ("dot-dot from a section", "/self/hosts/../../clusters/c3/env", {}),
    ("percent-encoded dot-dot", "/self/%2e%2e/clusters/c3", {}),
    ("upper-case percent-encoded dot-dot", "/self/%2E%2E/%2E%2E/clusters/c3", {}),
    ("double-encoded dot-dot", "/self/%252e%252e/clusters/c3", {}),
    ("encoded slashes", "/self%2f..%2fclusters%2fc3", {}),
    ("empty segments", "//clusters//c3", {}),
    ("empty segments inside /self", "/self//..//clusters/c3", {}),
    ("backslashes", "/self\\..\\clusters\\c3", {}),
    ("mapping table", "/_pitrix/mapping", {}),
    ("status tree of all clusters", "/_pitrix/status", {}),
    ("management path on the instance port", "/v1/data/clusters/c3", {}),
    ("link to another owner's cluster", "/self/links/foreign", {}),
    ("link to another owner's cluster, encoded", "/self/links/%66oreign/env", {}),
    ("link pointing through dot-dot", "/self/links/store/../../../clusters/c3", {}),
    ("absolute URI target", "http://example.invalid/clusters/c3", {}),
    ("forged X-Forwarded-For of c3's instance", "/self", {"X-Forwarded-For": "127.0.0.1"}),
    ("forged X-Instance-Id", "/self", {"X-Instance-Id": "i-x1"}),
    ("forged X-Real-IP and Forwarded", "/self", {"X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1"}),
    ("forged client-certificate header", "/self", {"X-SSL-Client-S-DN": "CN=i-x1,O=usr-b,OU=c3"}),
    ("query parameters naming another cluster", "/self?cluster=c3&instance_id=i-x1", {}),
]


@pytest.mark.parametrize(("case", "target", "headers"), READ_ATTACKS, ids=[c[0] for c in READ_ATTACKS])
async def test_reads_never_reach_another_owner(
    tls_world: TLSWorld, net: Net, case: str, target: str, headers: dict[str, str]
) -> None:
    await _plant_secret(tls_world)
    forged = {k: v.replace("127.0.0.1", net.ip(202)) for k, v in headers.items()}
    status, body = await tls_world.raw(tls_world.creds["i-web1"], "GET", target, headers=forged)
    assert SECRET.encode() not in body, case
    assert b"c3" not in body or status >= 400, case
    if status == 301:
        # metad's redirect of a path with dot-dot or empty segments, to the clean path, empty:
        # the clean path is then served (or refused) as any other.
        assert body == b"", case
    elif status == 200:
        # Only the caller's own view may come back (the forged-header cases answer /self).
        view = json.loads(body)
        assert view["host"]["instance_id"] == "i-web1", case
        assert "foreign" not in view.get("links", {}), case
    else:
        assert status in (400, 403, 404), (case, status, body[:200])


async def test_another_owners_instance_sees_only_its_cluster(tls_world: TLSWorld) -> None:
    await _plant_secret(tls_world)
    status, view = await tls_world.get("i-x1", "/self")
    assert status == 200
    assert view["cluster"]["cluster_id"] == "c3"
    assert "c1" not in json.dumps(view)
    status, _ = await tls_world.get("i-x1", "/self/links")
    assert status == 404


async def test_a_certificate_used_from_another_instances_address_is_still_its_own(
    tls_world: TLSWorld, net: Net
) -> None:
    """Source addresses do not identify anyone under mTLS: i-web1 dialling from i-x1's address is i-web1."""
    await _plant_secret(tls_world)
    status, body = await tls_world.raw(tls_world.creds["i-web1"], "GET", "/self", local_ip=net.ip(202))
    assert status == 200
    assert json.loads(body)["host"]["instance_id"] == "i-web1"
    assert SECRET.encode() not in body


async def _handshake_refused(world: TLSWorld, context: ssl.SSLContext, port: str = "instance") -> None:
    try:
        status, _ = await world.raw(None, "GET", "/self", context=context, port=port)
    except (ssl.SSLError, ConnectionError, IndexError, ValueError):
        return
    pytest.fail(f"the server answered {status} without a valid client certificate")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/self"),
        ("GET", "/self/host"),
        ("GET", "/self?wait=true&prev_version=0"),
        ("GET", "/"),
        ("PUT", "/self/status/heartbeat"),
        ("PUT", "/self/status/applied"),
        ("POST", "/self/cert"),
        ("DELETE", "/self"),
    ],
)
async def test_no_certificate_gets_nothing_but_the_bootstrap_door(
    tls_world: TLSWorld, method: str, path: str
) -> None:
    """Without a certificate the instance port lets the handshake through (POST /self/bootstrap is
    how an instance gets its first certificate) and refuses every other request."""
    await _plant_secret(tls_world)
    context = pki.client_context(tls_world.ca_file)
    status, body = await tls_world.raw(None, method, path, context=context)
    assert status == 403, body
    assert SECRET.encode() not in body and b"c1" not in body


async def test_no_certificate_is_refused_at_the_management_handshake(tls_world: TLSWorld) -> None:
    await _handshake_refused(tls_world, pki.client_context(tls_world.ca_file), port="manage")


async def test_a_certificate_from_another_ca_is_refused(tls_world: TLSWorld, tmp_path) -> None:
    """Same subject as a real instance, signed by an attacker's CA."""
    rogue = pki.CertificateAuthority.create("pitrix test CA")  # even the same CA name
    issued = rogue.issue_instance("i-x1", "usr-b", "c3")
    issued.write(tmp_path / "rogue.crt", tmp_path / "rogue.key")
    ctx = pki.client_context(tls_world.ca_file, tmp_path / "rogue.crt", tmp_path / "rogue.key")
    await _handshake_refused(tls_world, ctx)
    await _handshake_refused(tls_world, ctx, port="manage")


async def test_plain_http_to_the_tls_port_gets_nothing(tls_world: TLSWorld) -> None:
    url = tls_world.metad.instance_url.replace("https://", "http://")
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(url + "/self") as response:
                assert response.status == 400
                assert "c1" not in await response.text()
        except aiohttp.ClientError:
            pass


@pytest.mark.parametrize(
    ("case", "subject"),
    [
        ("right CA, unmapped instance id", ("i-ghost", "usr-a", "c1")),
        ("right CA, mapped id but another cluster in OU", ("i-web1", "usr-a", "c3")),
        ("right CA, mapped id but another owner in O", ("i-web1", "usr-b", "c1")),
        ("right CA, another owner's instance id claiming our cluster", ("i-x1", "usr-a", "c1")),
        ("right CA, no O and OU", ("i-web1", None, None)),
    ],
)
async def test_certificates_that_disagree_with_the_mapping_are_refused(
    tls_world: TLSWorld, case: str, subject: tuple[str, str | None, str | None]
) -> None:
    cn, o, ou = subject
    key = pki.generate_key()
    csr = pki.make_csr(key, pki.Subject(cn, o, ou))
    issued = tls_world.ca.sign_csr(csr)
    cred = tls_world.save(f"odd-{cn}-{o}-{ou}", pki.Issued(issued.cert, key))
    status, body = await tls_world.raw(cred, "GET", "/self")
    assert status == 403, (case, body[:200])
    assert SECRET.encode() not in body


async def test_management_api_refuses_instance_certificates(tls_world: TLSWorld) -> None:
    cred = tls_world.creds["i-web1"]
    for method, target, body in [
        ("GET", "/v1/data/clusters/c3", b""),
        ("PUT", "/v1/data/clusters/c1/links", b'{"evil": "c3"}'),
        ("GET", "/v1/mapping/i-x1", b""),
        ("PUT", "/v1/mapping/i-web1", b'{"cluster_id": "c3", "role": "x", "ip": "127.0.0.9"}'),
        ("GET", "/v1/watch?prefix=/", b""),
        ("PUT", "/v1/revoked-instances/i-web2", b""),
        ("DELETE", "/v1/revoked/1", b""),
    ]:
        status, answer = await tls_world.raw(cred, method, target, port="manage", body=body)
        assert status == 403, (method, target, answer[:200])
    mapping = await tls_world.manage.get_mapping("i-web1")
    assert mapping is not None and mapping["cluster_id"] == "c1"
    assert "evil" not in (await tls_world.manage.get_data("/clusters/c1/links") or {})


async def test_management_api_refuses_no_certificate(tls_world: TLSWorld) -> None:
    await _handshake_refused(tls_world, pki.client_context(tls_world.ca_file), port="manage")


WRITE_ATTACKS: list[tuple[str, str, str]] = [
    ("another instance's status by plain path", "PUT", "/_pitrix/status/c1/i-web2/health"),
    ("dot-dot out of own status", "PUT", "/self/status/../../_pitrix/status/c1/i-web2/health"),
    ("encoded dot-dot out of own status", "PUT", "/self/status/%2e%2e/%2e%2e/i-web2/health"),
    ("command result naming another path", "PUT", "/self/status/cmd/..%2f..%2fi-web2%2fhealth"),
    ("cluster data through /self", "PUT", "/self/env/port"),
    ("links through /self", "PUT", "/self/links/evil"),
    ("mapping through the instance port", "PUT", "/v1/mapping/i-web1"),
    ("management data through the instance port", "POST", "/v1/data/clusters/c1"),
    ("delete own cluster data", "DELETE", "/self/hosts"),
]


@pytest.mark.parametrize(("case", "method", "target"), WRITE_ATTACKS, ids=[c[0] for c in WRITE_ATTACKS])
async def test_writes_outside_own_status_are_refused(
    tls_world: TLSWorld, case: str, method: str, target: str
) -> None:
    await _plant_secret(tls_world)
    before = tls_world.metad.mirror.revision
    body = json.dumps({"ok": False, "error": "pwned", "revision": 1}).encode()
    status, answer = await tls_world.raw(tls_world.creds["i-web1"], method, target, body=body)
    assert status in (400, 403, 404, 405), (case, status, answer[:200])
    health = await tls_world.manage.get_data("/_pitrix/status/c1/i-web2/health")
    assert health == {"ok": "true", "error": "untouched"}
    assert tls_world.metad.mirror.revision == before, case


async def test_own_status_write_lands_under_own_key_only(tls_world: TLSWorld) -> None:
    status, answer = await tls_world.raw(
        tls_world.creds["i-web1"], "PUT", "/self/status/health", body=b'{"ok": true}'
    )
    assert status == 200
    # A status write is answered once etcd has it; the management GET reads metad's mirror,
    # which the etcd watch brings there a moment later.
    assert await tls_world.metad.mirror.wait_for_revision(json.loads(answer)["revision"])
    stored = await tls_world.manage.get_data("/_pitrix/status/c1/i-web1/health")
    assert json.loads(stored) == {"ok": True}


async def _held_poll(world: TLSWorld, who: str, path: str) -> asyncio.Task[int]:
    """A long-poll of ``path`` by ``who``, returned once metad holds it; the task gives its status."""
    session = world.session(world.creds[who])
    url = f"{world.metad.instance_url}{path}?wait=true&prev_version={world.metad.mirror.revision}"
    before = len(world.metad.mirror.waiters)

    async def poll() -> int:
        async with session.get(url) as response:
            await response.read()
            return response.status

    task = asyncio.create_task(poll())
    await asyncio.wait_for(world.metad.mirror.waiters.wait_for_count(before + 1), 10)
    return task


async def test_a_revoked_certificate_is_refused_and_its_long_poll_closed(tls_world: TLSWorld) -> None:
    world = tls_world
    cred = world.creds["i-web1"]
    task = await _held_poll(world, "i-web1", "/self")
    # Another instance keeps its answer: revocation is per identity.
    status, _ = await world.get("i-web2", "/self/host")
    assert status == 200
    revoke = await world.manage._request("PUT", f"/v1/revoked/{pki.serial_hex(cred.serial)}", {})
    assert revoke["ok"]
    assert await asyncio.wait_for(task, 10) == 403
    status, body = await world.raw(cred, "GET", "/self")
    assert status == 403 and b"revoked" in body
    status, _ = await world.raw(cred, "PUT", "/self/status/health", body=b'{"ok": true}')
    assert status == 403
    listing = await world.manage._request("GET", "/v1/revoked")
    assert listing["serials"] == [pki.serial_hex(cred.serial)]
    # A renewed certificate (new serial) for the same instance is accepted again.
    world.save("i-web1-new", world.ca.issue_instance("i-web1", "usr-a", "c1"))
    status, _ = await world.raw(world.creds["i-web1-new"], "GET", "/self")
    assert status == 200


async def test_revoking_an_instance_refuses_all_its_certificates(tls_world: TLSWorld) -> None:
    world = tls_world
    second = world.save("i-db1-b", world.ca.issue_instance("i-db1", "usr-a", "c1"))
    task = await _held_poll(world, "i-db1", "/self/env")
    await world.manage._request("PUT", "/v1/revoked-instances/i-db1", {"reason": "scale-in"})
    assert await asyncio.wait_for(task, 10) == 403
    for cred in (world.creds["i-db1"], second):
        assert (await world.raw(cred, "GET", "/self"))[0] == 403
    await world.manage._request("DELETE", "/v1/revoked-instances/i-db1")
    assert (await world.raw(second, "GET", "/self"))[0] == 200


async def test_an_unmapped_instance_is_refused_and_its_long_poll_closed(tls_world: TLSWorld) -> None:
    """Scale-in deletes the mapping: a still valid certificate no longer names anybody."""
    world = tls_world
    task = await _held_poll(world, "i-web2", "/self")
    await world.manage.delete_mapping("i-web2")
    assert await asyncio.wait_for(task, 10) == 403


async def test_renewal_signs_only_the_callers_own_subject(tls_world: TLSWorld) -> None:
    world = tls_world
    cred = world.creds["i-web1"]
    for case, subject in [
        ("another instance", pki.Subject("i-web2", "usr-a", "c1")),
        ("another owner's instance", pki.Subject("i-x1", "usr-b", "c3")),
        ("own id in another cluster", pki.Subject("i-web1", "usr-a", "c3")),
        ("the runtime", pki.Subject(pki.RUNTIME_CN, "pitrix", pki.MANAGEMENT_OU)),
    ]:
        csr = pki.make_csr(pki.generate_key(), subject)
        status, body = await world.raw(cred, "POST", "/self/cert", body=csr)
        assert status == 400, (case, body[:200])
    status, body = await world.raw(cred, "POST", "/self/cert", body=b"not a csr")
    assert status == 400 and b"csr" in body

    key = pki.generate_key()
    csr = pki.make_csr(key, pki.Subject("i-web1", "usr-a", "c1"))
    status, body = await world.raw(
        cred, "POST", "/self/cert", body=json.dumps({"csr": csr.decode()}).encode()
    )
    assert status == 200, body[:200]
    answer = json.loads(body)
    renewed = pki.cert_from_pem(answer["certificate"].encode())
    assert pki.serial_hex(renewed.serial_number) == answer["serial"]
    world.save("i-web1-renewed", pki.Issued(renewed, key))
    status, body = await world.raw(world.creds["i-web1-renewed"], "GET", "/self/host/instance_id")
    assert (status, json.loads(body)) == (200, "i-web1")


async def test_the_runtime_certificate_is_not_an_instance(tls_world: TLSWorld) -> None:
    status, _ = await tls_world.raw(tls_world.creds["runtime"], "GET", "/self")
    assert status == 403


async def test_the_raw_client_reaches_what_is_allowed(tls_world: TLSWorld) -> None:
    """Positive control for the cases above: the same client, a legitimate path, a 200."""
    status, body = await tls_world.raw(
        tls_world.creds["i-web1"], "GET", "/self/links/store/cluster/cluster_id"
    )
    assert (status, json.loads(body)) == (200, "c2")


async def test_legacy_mode_ignores_forwarded_for_from_untrusted_peers(store, net: Net) -> None:
    """Source-IP identity: X-Forwarded-For counts only when the peer is a configured trusted proxy."""
    proxy = net.ip(100)
    server = Metad(store, net.metad_ip, 0, 0, trusted_proxies=[proxy])
    await server.start()
    try:
        async with MetadManagementClient(server.manage_url) as manage:
            await seed_world(manage, net)

        async def who(local: str, forwarded: str | None) -> tuple[int, str]:
            headers = {"X-Forwarded-For": forwarded} if forwarded else {}
            headers["Accept"] = "application/json"
            connector = aiohttp.TCPConnector(local_addr=(local, 0))
            async with aiohttp.ClientSession(connector=connector) as session:
                url = server.instance_url + "/self/host/instance_id"
                async with session.get(url, headers=headers) as response:
                    return response.status, await response.text()

        # i-web1 forging i-web2's address: still i-web1.
        assert await who(net.ip(1), net.ip(2)) == (200, '"i-web1"')
        # An unmapped address forging i-web2's: refused.
        assert (await who(net.ip(150), net.ip(2)))[0] == 403
        # The trusted proxy speaks for i-web2; a client-supplied hop left of it is not believed.
        assert await who(proxy, net.ip(2)) == (200, '"i-web2"')
        assert await who(proxy, f"{net.ip(1)}, {net.ip(2)}") == (200, '"i-web2"')
        # The proxy itself without a header is nobody; garbage in the header is nobody.
        assert (await who(proxy, None))[0] == 403
        assert (await who(proxy, "not-an-ip"))[0] == 403
    finally:
        await server.stop()


async def test_a_revocation_list_loads_in_one_request(tls_world: TLSWorld) -> None:
    world = tls_world
    revoked = pki.RevocationList()
    for who in ("i-web2", "i-x1"):
        revoked.revoke(world.creds[who].serial)
    answer = await world.manage._request("POST", "/v1/revoked", json.loads(revoked.to_json()))
    assert answer["ok"]
    assert (await world.raw(world.creds["i-web2"], "GET", "/self"))[0] == 403
    assert (await world.raw(world.creds["i-x1"], "GET", "/self"))[0] == 403
    assert (await world.raw(world.creds["i-web1"], "GET", "/self"))[0] == 200
    status, body = await world.raw(world.creds["runtime"], "POST", "/v1/revoked", port="manage", body=b"{}")
    assert status == 400 and b"revoked" in body


async def _keepalive_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    """One GET on an already open keep-alive connection; its status."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: metad\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def test_a_kept_alive_connection_is_reidentified_after_identity_writes(tls_world: TLSWorld) -> None:
    """metad remembers a connection's caller between requests, but never across a write that
    changes a mapping, a revocation or an owner: each such write is seen by the next request."""
    world = tls_world
    mirror = world.metad.mirror
    host, _, port = world.metad.instance_url.split("://", 1)[1].rpartition(":")
    cred = world.creds["i-web1"]
    reader, writer = await asyncio.open_connection(host, int(port), ssl=cred.context())
    try:
        assert await _keepalive_get(reader, writer, "/self/host") == 200
        epoch = mirror.identity_epoch
        # Ordinary data writes leave the remembered identity alone.
        revision = await world.manage.put_data("/clusters/c1/env/web/workers", 3)
        assert await mirror.wait_for_revision(revision)
        assert mirror.identity_epoch == epoch
        assert await _keepalive_get(reader, writer, "/self/host") == 200

        # The cluster changes hands: the certificate's O no longer matches.
        revision = await world.manage.put_data("/clusters/c1/cluster/owner", "usr-b")
        assert await mirror.wait_for_revision(revision)
        assert await _keepalive_get(reader, writer, "/self/host") == 403
    finally:
        writer.close()

    revision = await world.manage.put_data("/clusters/c1/cluster/owner", "usr-a")
    assert await mirror.wait_for_revision(revision)
    reader, writer = await asyncio.open_connection(host, int(port), ssl=cred.context())
    try:
        assert await _keepalive_get(reader, writer, "/self/host") == 200
        # The management API answers once its own mirror has the write.
        revoke = await world.manage._request("PUT", f"/v1/revoked/{pki.serial_hex(cred.serial)}", {})
        assert revoke["ok"]
        assert await _keepalive_get(reader, writer, "/self/host") == 403
    finally:
        writer.close()
