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


def self_issued(issuer: pki.CertificateAuthority, listen_ip: str, client_ca: Path, folder: Path) -> MetadTLS:
    """TLS with a server certificate this metad makes for its own address, signed by ``issuer``.

    The runtime cannot hand a metadata VM its server certificate: the cloud picks the VM's address
    after the VM's userdata is written. It hands over the issuer instead; the certificate carries
    the issuer after it, so clients trusting the issuer or the root above it both verify it.
    """
    issued = issuer.issue_server([listen_ip])
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    issued.write(cert_file, key_file, chain=issuer.cert_pem)
    return MetadTLS(cert_file, key_file, client_ca, issuer)
