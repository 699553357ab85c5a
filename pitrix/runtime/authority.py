"""The runtime's certificate authority: one root per installation, kept in etcd.

Every pitrixd replica must sign with the same root, and a restarted one must keep signing with
it, so the root is created once with create-if-absent and read back by whoever lost the race.
Each metadata cluster gets its own subordinate issuer (stored with the metadata cluster's record
before its VM exists): its metad trusts only that issuer, so a certificate made for another
owner's metadata cluster is refused at the TLS handshake, before any identity check.

The root's record (certificate and key, PEM) is sealed (pitrix.sealing); one an older pitrixd
stored in clear is read as it is and sealed in place.
"""

from __future__ import annotations

import contextlib
import ssl
import tempfile
from pathlib import Path

from pitrix import pki
from pitrix.sealing import Sealer, create_sealed, get_sealed
from pitrix.store import Store

CA_KEY = "/pitrix/ca"


class Authority:
    def __init__(self, root: pki.CertificateAuthority) -> None:
        self.root = root

    @classmethod
    async def load(cls, store: Store, sealer: Sealer) -> Authority:
        """The installation's root CA, created on first use."""
        pem = await get_sealed(store, CA_KEY, sealer)
        if pem is None:
            pem = await create_sealed(store, CA_KEY, pki.CertificateAuthority.create().to_pem(), sealer)
        return cls(pki.CertificateAuthority.from_pem(pem))

    def ca_pem(self) -> bytes:
        return self.root.cert_pem

    def new_issuer(self, owner: str, runtime: str) -> pki.CertificateAuthority:
        """A metadata cluster's own issuer: it signs its metad, its instances and our client cert."""
        return self.root.issue_subordinate(f"pitrix metadata {owner}/{runtime}")


def issuer_from_pem(pem: str) -> pki.CertificateAuthority:
    return pki.CertificateAuthority.from_pem(pem.encode())


def management_context(issuer: pki.CertificateAuthority) -> ssl.SSLContext:
    """A client context for one metadata cluster: trusts only its issuer, shows a runtime certificate.

    ``ssl`` loads certificates from files only, so the freshly issued pair passes through a private
    temporary directory that is gone before this returns; nothing secret stays on disk.
    """
    issued = issuer.issue_management()
    with tempfile.TemporaryDirectory(prefix="pitrix-mgmt-") as tmp:
        folder = Path(tmp)
        ca, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
        ca.write_bytes(issuer.cert_pem)
        issued.write(cert, key, chain=issuer.cert_pem)
        ctx = pki.client_context(ca, cert, key)
        for path in (ca, cert, key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return ctx
