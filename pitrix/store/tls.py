"""The TLS material a client presents to an etcd that requires client certificates.

An etcd with ``--client-cert-auth`` answers only clients holding a certificate from its CA, so
whoever reads these files can read every key: the key file must stay private (0600) and so must
the directory holding it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


class EtcdTLSError(ValueError):
    """The TLS material is incomplete or unreadable; the message names the setting."""


@dataclass(frozen=True, slots=True)
class EtcdTLS:
    """Where the CA that signed etcd's server certificate, and our client certificate and key, are.

    ``ca_file`` ``None`` trusts the system's roots; ``cert_file``/``key_file`` go together and may
    both be ``None`` for an etcd that verifies its server certificate only.
    """

    ca_file: Path | None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise EtcdTLSError(
                "cert_file/key_file: a client certificate needs both the certificate and its key"
            )

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """``(ca, key, cert chain)`` PEM bytes, read now (renewed files are picked up on reconnect)."""
        return (
            _read(self.ca_file, "ca_file"),
            _read(self.key_file, "key_file"),
            _read(self.cert_file, "cert_file"),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """A client context for etcd's HTTP side (health probes, the gRPC gateway)."""
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file is not None:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise EtcdTLSError(f"etcd TLS material {self}: {getattr(exc, 'strerror', None) or exc}") from None
        return ctx


def _read(path: Path | None, field: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise EtcdTLSError(f"{field}: {path}: {exc.strerror or exc}") from None
