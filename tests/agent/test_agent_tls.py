"""The metad client's mutual TLS: the CA, client certificate and key from the config are used.

metad itself does not serve TLS yet, so the server here is a bare aiohttp TLS endpoint that
requires a client certificate and answers with the identity it saw, as metad will.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pitrix.agent.errors import BackendError
from pitrix.agent.metad_client import MetadClient


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[0] if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path, Path, Path]]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("pitrix test CA", ca_key, None, ca=True)
    ca_path, _ = _write(tmp_path / "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert, server_key_path = _write(
        tmp_path / "server", _issue("metad", server_key, (ca.subject, ca_key), ip="127.0.0.1"), server_key
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert, client_key_path = _write(
        tmp_path / "client", _issue("i-tls1", client_key, (ca.subject, ca_key)), client_key
    )

    async def whoami(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else None
        return web.json_response({"cn": cn}, headers={"X-Metad-Version": "7"})

    app = web.Application()
    app.router.add_get("/self/whoami", whoami)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_path))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(server_cert), str(server_key_path))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}", ca_path, client_cert, client_key_path
    finally:
        await runner.cleanup()


async def test_client_certificate_is_presented(tls_server: tuple[str, Path, Path, Path]) -> None:
    url, ca, cert, key = tls_server
    client = MetadClient([url], client_cert=cert, client_key=key, ca_file=ca)
    try:
        answer = await client.get("/self/whoami")
        assert answer.body == {"cn": "i-tls1"} and answer.version == 7
    finally:
        await client.close()


async def test_without_a_certificate_the_handshake_fails(tls_server: tuple[str, Path, Path, Path]) -> None:
    url, ca, _cert, _key = tls_server
    client = MetadClient([url], ca_file=ca)
    try:
        with pytest.raises(BackendError, match="no node answered"):
            await client.get("/self/whoami")
    finally:
        await client.close()


def test_unreadable_certificate_files_are_config_errors(tmp_path: Path) -> None:
    from pitrix.agent.errors import ConfigError

    with pytest.raises(ConfigError, match="client_cakeys"):
        MetadClient(["https://127.0.0.1:1"], ca_file=tmp_path / "missing-ca.crt")
    (tmp_path / "bad.crt").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="client_cert/client_key"):
        MetadClient(["https://127.0.0.1:1"], client_cert=tmp_path / "bad.crt")
