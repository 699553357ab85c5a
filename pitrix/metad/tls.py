"""What a metad needs for mutual TLS: its server certificate, the CA its clients must come from,
and optionally the issuer it signs renewals with."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from pathlib import Path

from pitrix import pki


@dataclass(frozen=True)
class MetadTLS:
    cert_file: Path
    key_file: Path
    client_ca: Path
    # Signs ``POST /self/cert`` renewals; a subordinate CA of pitrixd's, or None (renewal refused).
    issuer: pki.CertificateAuthority | None = None
    # Lifetime of the instance certificates the issuer signs (bootstrap and renewal).
    instance_lifetime: dt.timedelta = pki.INSTANCE_LIFETIME
    # The address metad signed its own server certificate for, when it did (see ``self_issued``):
    # it then signs the next one before this one runs out.
    self_issued_ip: str | None = None
    server_lifetime: dt.timedelta = pki.SERVER_LIFETIME
    # Seconds a certificate replaced by a renewal stays valid before it is revoked.
    renewal_grace: float = 60.0
    # CA(s) the management port's clients must come from (pitrixd's management CA); None: ``client_ca``.
    manage_client_ca: Path | None = None

    def server_context(self, *, certificate_optional: bool = False) -> ssl.SSLContext:
        """A port's context: a certificate from ``client_ca`` is required to finish the handshake.

        ``certificate_optional`` (the instance port, when an issuer is set) lets a caller without a
        certificate through the handshake, so that it can fetch its first one with a bootstrap
        token; every other request of such a caller is refused by the identity check.
        """
        ctx = pki.server_context(self.cert_file, self.key_file, self.client_ca)
        if self.issuer is not None:
            # Instance certificates come from the issuer: trusting it too accepts one shown without
            # its chain even when ``client_ca`` is the root above the issuer.
            ctx.load_verify_locations(cadata=self.issuer.cert_pem.decode())
        if certificate_optional:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx

    def manage_context(self) -> ssl.SSLContext:
        """The management port's context: only certificates from ``manage_client_ca`` get through.

        The instance port trusts the cluster's issuer alone and this port the runtime's management
        CA alone, so an instance certificate never reaches the management API and a management
        certificate is no instance identity.
        """
        if self.manage_client_ca is None:
            return self.server_context()
        return pki.server_context(self.cert_file, self.key_file, self.manage_client_ca)

    def server_renewal_due(self) -> dt.datetime | None:
        """When a self-issued server certificate should be replaced (``pki.renewal_time``); None
        when metad did not issue it and so cannot."""
        if self.self_issued_ip is None or self.issuer is None:
            return None
        cert = pki.cert_from_pem(self.cert_file.read_bytes())
        return pki.renewal_time(cert.not_valid_before_utc, cert.not_valid_after_utc)

    def reissue_server(self) -> None:
        """Sign and write the next self-issued server certificate over the current files.

        Contexts made before keep serving the old one until ``ctx.load_cert_chain`` is called on
        them again; held connections are not affected either way.
        """
        assert self.self_issued_ip is not None and self.issuer is not None
        _write_server(self.issuer, self.self_issued_ip, self.cert_file, self.key_file, self.server_lifetime)


def _write_server(
    issuer: pki.CertificateAuthority, ip: str, cert_file: Path, key_file: Path, lifetime: dt.timedelta
) -> None:
    issued = issuer.issue_server([ip], lifetime=lifetime)
    issued.write(cert_file, key_file, chain=issuer.cert_pem)


def self_issued(
    issuer: pki.CertificateAuthority,
    listen_ip: str,
    client_ca: Path,
    folder: Path,
    lifetime: dt.timedelta = pki.SERVER_LIFETIME,
) -> MetadTLS:
    """TLS with a server certificate this metad makes for its own address, signed by ``issuer``.

    The runtime cannot hand a metadata VM its server certificate: the cloud picks the VM's address
    after the VM's userdata is written. It hands over the issuer instead; the certificate carries
    the issuer after it, so clients trusting the issuer or the root above it both verify it.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    _write_server(issuer, listen_ip, cert_file, key_file, lifetime)
    return MetadTLS(
        cert_file, key_file, client_ca, issuer, self_issued_ip=listen_ip, server_lifetime=lifetime
    )
