"""The private CA of one embedded etcd: who may talk to it is whoever holds a certificate it signed.

The CA is born in the etcd's own state directory and never leaves it, so on a metadata VM only
metad (the process that started etcd there) holds a client certificate, and on pitrixd's host only
pitrixd's user can read one. One member certificate serves clients and peers alike (etcd presents
it to its peers and to its own gRPC gateway as a client too); one client certificate is ours.

Everything sits in a 0700 directory, keys 0600. Certificates are reused across restarts and
issued anew when due for renewal, when the CA changed, or when the address they name changed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from pitrix import pki
from pitrix.paths import write_private
from pitrix.store.tls import EtcdTLS

MEMBER_NAME = "pitrix-etcd"
CLIENT_SUBJECT = pki.Subject("pitrix-etcd-client", "pitrix", "etcd")
LEAF_LIFETIME = dt.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class EtcdPKI:
    """The files of one embedded etcd's TLS, as paths; ``renewed`` when this call (re)issued any."""

    directory: Path
    renewed: bool = False

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def member_cert(self) -> Path:
        return self.directory / "member.crt"

    @property
    def member_key(self) -> Path:
        return self.directory / "member.key"

    @property
    def client(self) -> EtcdTLS:
        return EtcdTLS(
            self.directory / "ca.crt", self.directory / "client.crt", self.directory / "client.key"
        )


def member_addresses(host: str) -> list[str]:
    """The names a client may dial the member at: its host, and the loopback names beside a loopback host."""
    names = [host]
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        names += [n for n in ("127.0.0.1", "localhost") if n != host]
    return names


def ensure(directory: Path, host: str) -> EtcdPKI:
    """The CA, member and client certificates under ``directory``, made or renewed as needed.

    Blocking (key generation, file I/O): call it from a thread.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    layout = EtcdPKI(directory)
    renewed = False
    ca = _load_ca(layout)
    if ca is None:
        ca = pki.CertificateAuthority.create("pitrix etcd CA")
        write_private(layout.ca_key, pki.key_to_pem(ca.key))
        _write_public(layout.ca_cert, ca.cert_pem)
        renewed = True
    addresses = member_addresses(host)
    if renewed or not _current(ca, layout.member_cert, layout.member_key, addresses):
        ca.issue_server(addresses, MEMBER_NAME, LEAF_LIFETIME, client_auth=True).write(
            layout.member_cert, layout.member_key
        )
        renewed = True
    client = layout.client
    assert client.cert_file is not None and client.key_file is not None
    if renewed or not _current(ca, client.cert_file, client.key_file, None):
        ca.issue_client(CLIENT_SUBJECT, LEAF_LIFETIME).write(client.cert_file, client.key_file)
        renewed = True
    for path in directory.iterdir():
        os.chmod(path, 0o600)
    return EtcdPKI(directory, renewed)


def _load_ca(layout: EtcdPKI) -> pki.CertificateAuthority | None:
    """The CA on disk unless missing, broken or due for renewal (then every leaf is issued anew)."""
    try:
        ca = pki.CertificateAuthority.load_pair(layout.ca_cert, layout.ca_key)
    except pki.PKIError:
        return None
    if _due(ca.cert):
        return None
    return ca


def _current(
    ca: pki.CertificateAuthority, cert_path: Path, key_path: Path, addresses: list[str] | None
) -> bool:
    """Whether the leaf on disk is signed by ``ca``, matches its key, is not due, and names ``addresses``."""
    try:
        cert = pki.cert_from_pem(cert_path.read_bytes())
        key = pki.key_from_pem(key_path.read_bytes())
        ca.verify(cert)
    except (OSError, pki.PKIError):
        return False
    if cert.public_key() != key.public_key() or _due(cert):
        return False
    if addresses is None:
        return True
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    named = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    named |= set(sans.get_values_for_type(x509.DNSName))
    wanted = set()
    for address in addresses:
        try:
            wanted.add(str(ipaddress.ip_address(address)))
        except ValueError:
            wanted.add(address)
    return named == wanted


def _due(cert: x509.Certificate) -> bool:
    now = dt.datetime.now(dt.UTC)
    return now >= pki.renewal_time(cert.not_valid_before_utc, cert.not_valid_after_utc)


def _write_public(path: Path, data: bytes) -> None:
    write_private(path, data)  # 0600 too: nobody but us has a use for it
