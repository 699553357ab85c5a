"""The runtime's certificate authority: one root per installation, kept in etcd.

Every pitrixd replica must sign with the same root, and a restarted one must keep signing with
it, so the root is created once with create-if-absent and read back by whoever lost the race.
Each metadata cluster has its own subordinate issuer, whose key its metad makes itself and whose
certificate the root signs from a CSR (``pitrix.metad.issuer_bootstrap``): its metad's instance
port trusts only that issuer, so a certificate made for another owner's metadata cluster is
refused at the TLS handshake, before any identity check. pitrixd reaches every metad's
management port with a certificate from its management CA (also kept in etcd), which metad
trusts on that port alone.

The root's record (certificate and key, PEM) is sealed (pitrix.sealing); one an older pitrixd
stored in clear is read as it is and sealed in place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from pitrix import pki
from pitrix.runtime import keys
from pitrix.sealing import Sealer, create_sealed, get_sealed
from pitrix.store import Store, etcd_pki

CA_KEY = keys.CA
MANAGEMENT_CA_KEY = keys.MANAGEMENT_CA
ETCD_PEERS_CA_KEY = keys.ETCD_PEERS_CA
PEER_LIFETIME = dt.timedelta(days=365)
ISSUER_LIFETIME = dt.timedelta(days=365)


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

    async def management_ca(self, store: Store, sealer: Sealer) -> pki.CertificateAuthority:
        """The CA of pitrixd's management certificates, created on first use like the root (and
        sealed like it).

        Subordinate to the root (path length 0); metad trusts it on its management port only.
        """
        pem = await get_sealed(store, MANAGEMENT_CA_KEY, sealer)
        if pem is None:
            fresh = self.root.issue_subordinate("pitrix management", pki.CA_LIFETIME).to_pem()
            pem = await create_sealed(store, MANAGEMENT_CA_KEY, fresh, sealer)
        return pki.CertificateAuthority.from_pem(pem)

    def sign_issuer(self, csr_pem: bytes, owner: str, runtime: str) -> bytes:
        """A metadata cluster's issuer certificate for the key its metad made (PEM).

        A CA that signs leaves only (path length 0); its name is the runtime's, never the CSR's,
        and nothing but the CSR's public key is taken from it.
        """
        public_key = pki.load_csr(csr_pem).public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)  # load_csr refuses any other key
        name = f"pitrix metadata {owner}/{runtime}"[:64]
        cert = self.root.sign_subordinate(name, public_key, ISSUER_LIFETIME)
        return pki.cert_to_pem(cert)


async def etcd_peers_ca(store: Store, sealer: Sealer) -> pki.CertificateAuthority:
    """The CA of every metadata cluster member's etcd peer certificate, made on first use and
    sealed like the management CA. Its own root, not the installation's: a member trusts it for
    its peers only, and pins the peers' CN to its own cluster's (:func:`sign_peer`)."""
    pem = await get_sealed(store, ETCD_PEERS_CA_KEY, sealer)
    if pem is None:
        fresh = pki.CertificateAuthority.create("pitrix etcd peers").to_pem()
        pem = await create_sealed(store, ETCD_PEERS_CA_KEY, fresh, sealer)
    return pki.CertificateAuthority.from_pem(pem)


def sign_peer(ca: pki.CertificateAuthority, csr_pem: bytes, ip: str, cluster_cn: str) -> bytes:
    """A member's etcd peer certificate for the key its metad made (PEM): the member's address as
    the SAN, and ``cluster_cn`` (its metadata cluster's, never the CSR's) as the CN its peers pin
    with ``--peer-cert-allowed-cn``, so a member of another cluster cannot join."""
    public_key = pki.load_csr(csr_pem).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)  # load_csr refuses any other key
    # etcd checks a peer's certificate against the address it connects from: on loopback (the
    # simulator's VMs) that is 127.0.0.1 whatever the member listens on.
    addresses = etcd_pki.member_addresses(ip)
    cert = ca.sign_server_key(public_key, addresses, cluster_cn, PEER_LIFETIME, client_auth=True)
    return pki.cert_to_pem(cert)


def issuer_from_pem(pem: str) -> pki.CertificateAuthority:
    return pki.CertificateAuthority.from_pem(pem.encode())


def management_client_context(server_ca_pem: bytes, management: pki.CertificateAuthority) -> ssl.SSLContext:
    """A client context for one metadata cluster whose issuer pitrixd does not hold: trusts only
    that issuer (``server_ca_pem``, which signed metad's server certificate) and shows a
    certificate from the management CA."""
    return _context(server_ca_pem, management)


def management_context(issuer: pki.CertificateAuthority) -> ssl.SSLContext:
    """A client context for one metadata cluster: trusts only its issuer, shows a runtime certificate.

    ``ssl`` loads certificates from files only, so the freshly issued pair passes through a private
    temporary directory that is gone before this returns; nothing secret stays on disk.
    """
    return _context(issuer.cert_pem, issuer)


def _context(trust_pem: bytes, signer: pki.CertificateAuthority) -> ssl.SSLContext:
    issued = signer.issue_management()
    with tempfile.TemporaryDirectory(prefix="pitrix-mgmt-") as tmp:
        folder = Path(tmp)
        ca, cert, key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
        ca.write_bytes(trust_pem)
        issued.write(cert, key, chain=signer.cert_pem)
        ctx = pki.client_context(ca, cert, key)
        for path in (ca, cert, key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return ctx
