"""pitrix.pki: what each certificate says, persistence, CSR signing, revocation lists, TLS contexts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pitrix import pki


@pytest.fixture(scope="module")
def ca() -> pki.CertificateAuthority:
    return pki.CertificateAuthority.create("test CA")


def test_instance_certificate_names_instance_owner_and_cluster(ca: pki.CertificateAuthority) -> None:
    issued = ca.issue_instance("i-abc", "usr-1", "cl-9")
    assert issued.subject == pki.Subject("i-abc", "usr-1", "cl-9")
    cert = issued.cert
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == pki.INSTANCE_LIFETIME + pki.BACKDATE
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca.verify(cert)


def test_server_certificate_carries_its_addresses(ca: pki.CertificateAuthority) -> None:
    issued = ca.issue_server(["127.100.0.5", "metad.local"])
    san = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.100.0.5")]
    assert san.get_values_for_type(x509.DNSName) == ["metad.local"]
    with pytest.raises(pki.PKIError, match="addresses"):
        ca.issue_server([])
    with pytest.raises(pki.PKIError, match="addresses"):
        ca.issue_server(["a b"])


def test_management_certificate(ca: pki.CertificateAuthority) -> None:
    subject = ca.issue_management().subject
    assert subject.is_management and subject.cn == "pitrix-runtime" and subject.ou == "management"
    assert not ca.issue_instance("pitrix-runtime", "x", "y").subject.is_management


def test_ca_round_trips_through_pem_and_files(ca: pki.CertificateAuthority, tmp_path: Path) -> None:
    again = pki.CertificateAuthority.from_pem(ca.to_pem())
    again.verify(ca.issue_instance("i-1", "o", "c").cert)
    ca.verify(again.issue_instance("i-2", "o", "c").cert)
    ca.save(tmp_path / "ca.pem")
    assert (tmp_path / "ca.pem").stat().st_mode & 0o777 == 0o600
    assert pki.CertificateAuthority.load(tmp_path / "ca.pem").cert == ca.cert


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"", "certificate"),
        (b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "certificate"),
    ],
)
def test_bad_ca_documents_name_the_field(data: bytes, field: str) -> None:
    with pytest.raises(pki.PKIError) as err:
        pki.CertificateAuthority.from_pem(data)
    assert err.value.field == field


def test_a_key_of_another_ca_or_a_leaf_is_not_a_ca(ca: pki.CertificateAuthority) -> None:
    other = pki.CertificateAuthority.create()
    with pytest.raises(pki.PKIError, match="key"):
        pki.CertificateAuthority(ca.cert, other.key)
    leaf = ca.issue_instance("i", "o", "c")
    assert leaf.key is not None
    with pytest.raises(pki.PKIError, match="not a CA"):
        pki.CertificateAuthority(leaf.cert, leaf.key)
    with pytest.raises(pki.PKIError, match="not issued"):
        other.verify(leaf.cert)


def test_csr_signing_checks_the_subject_and_ignores_requested_extensions(
    ca: pki.CertificateAuthority,
) -> None:
    key = pki.generate_key()
    csr = pki.make_csr(key, pki.Subject("i-1", "o", "c"))
    issued = ca.sign_csr(csr, expected=pki.Subject("i-1", "o", "c"))
    assert issued.cert.public_key() == key.public_key()
    assert issued.key is None
    with pytest.raises(pki.PKIError, match="key"):
        _ = issued.key_pem
    with pytest.raises(pki.PKIError, match="not the caller"):
        ca.sign_csr(csr, expected=pki.Subject("i-2", "o", "c"))
    with pytest.raises(pki.PKIError, match="csr"):
        ca.sign_csr(b"garbage")
    # A CSR asking to be a CA still yields a plain client certificate.
    from cryptography.hazmat.primitives import hashes, serialization

    sneaky = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=i-1,O=o,OU=c"))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    cert = ca.sign_csr(sneaky).cert
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_subordinate_ca_signs_leaves_that_chain_to_the_root(ca: pki.CertificateAuthority) -> None:
    sub = ca.issue_subordinate("metadata usr-1")
    ca.verify(sub.cert)
    constraints = sub.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    sub.verify(sub.issue_instance("i", "o", "c").cert)


def test_lifetimes_never_outlive_the_ca() -> None:
    short = pki.CertificateAuthority.create(lifetime=dt.timedelta(hours=1))
    cert = short.issue_instance("i", "o", "c", lifetime=dt.timedelta(days=30)).cert
    assert cert.not_valid_after_utc == short.cert.not_valid_after_utc


def test_subject_fields_are_checked() -> None:
    ca = pki.CertificateAuthority.create()
    with pytest.raises(pki.PKIError, match="OU"):
        ca.issue_instance("i", "o", "")
    with pytest.raises(pki.PKIError, match="CN"):
        ca.issue_instance("x" * 65, "o", "c")


def test_revocation_list_round_trip_and_prune(ca: pki.CertificateAuthority, tmp_path: Path) -> None:
    revoked = pki.RevocationList()
    cert = ca.issue_instance("i", "o", "c").cert
    serial = revoked.revoke(cert)
    revoked.revoke(12345)
    assert serial in revoked and 12345 in revoked and len(revoked) == 2
    revoked.save(tmp_path / "crl.json")
    loaded = pki.RevocationList.load(tmp_path / "crl.json")
    assert loaded.entries == revoked.entries
    # Past the certificate's expiry its serial need not be kept; unknown expiries are kept.
    assert loaded.prune(now=cert.not_valid_after_utc.timestamp() + 1) == 1
    assert serial not in loaded and 12345 in loaded
    with pytest.raises(pki.PKIError, match="revoked"):
        pki.RevocationList.from_json("{}")


def test_serial_spelling() -> None:
    assert pki.parse_serial(pki.serial_hex(0xABC)) == 0xABC
    for bad in ("xyz", "0", ""):
        with pytest.raises(pki.PKIError, match="serial"):
            pki.parse_serial(bad)


async def test_contexts_complete_a_mutual_handshake(ca: pki.CertificateAuthority, tmp_path: Path) -> None:
    """A real TLS handshake over loopback: the server sees the client's subject; strangers fail."""
    import asyncio

    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    ca.issue_server(["127.0.0.1"]).write(tmp_path / "s.crt", tmp_path / "s.key")
    ca.issue_instance("i-9", "o", "c").write(tmp_path / "c.crt", tmp_path / "c.key")
    server_ctx = pki.server_context(tmp_path / "s.crt", tmp_path / "s.key", tmp_path / "ca.pem")
    seen: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peercert")["subject"])
        writer.write(b"hi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = pki.client_context(tmp_path / "ca.pem", tmp_path / "c.crt", tmp_path / "c.key")
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        assert await reader.read() == b"hi"
        writer.close()
        assert (("commonName", "i-9"),) in seen[0]  # type: ignore[operator]
        stranger = pki.client_context(tmp_path / "ca.pem")
        # Under TLS 1.3 the client may finish first; the server then refuses before any byte.
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=stranger)
            answer = await reader.read()
        except (ssl.SSLError, ConnectionError):
            answer = b""
        assert answer == b"" and len(seen) == 1
    with pytest.raises(pki.PKIError, match="client_ca"):
        pki.server_context(tmp_path / "s.crt", tmp_path / "s.key", tmp_path / "missing.pem")


def test_a_member_certificate_serves_and_authenticates_and_a_client_one_only_authenticates() -> None:
    """An etcd member shows one certificate to clients, to its peers and to its own gateway."""
    ca = pki.CertificateAuthority.create("etcd CA")
    member = ca.issue_server(["127.0.0.1", "localhost"], "pitrix-etcd", client_auth=True)
    usages = list(member.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert usages == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    plain = ca.issue_server(["127.0.0.1"])
    assert list(plain.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    client = ca.issue_client(pki.Subject("pitrix-etcd-client", "pitrix", "etcd"))
    assert client.subject == pki.Subject("pitrix-etcd-client", "pitrix", "etcd")
    assert list(client.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    ca.verify(client.cert)
