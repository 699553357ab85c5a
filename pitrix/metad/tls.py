"""What a metad needs for mutual TLS: its server certificate, the CA its clients must come from,
and optionally the issuer it signs renewals with."""

from __future__ import annotations

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

    def server_context(self) -> ssl.SSLContext:
        """Both ports' context: a certificate from ``client_ca`` is required to finish the handshake."""
        return pki.server_context(self.cert_file, self.key_file, self.client_ca)
