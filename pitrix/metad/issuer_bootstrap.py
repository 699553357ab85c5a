"""A metadata VM's metad gets its issuer the way an instance gets its certificate: by a one-time token.

The issuer's private key is made here, on the VM that uses it, and never leaves it; the VM's
userdata carries only public certificates and a one-time, short-lived token. Until it has an
issuer certificate, metad answers nothing but this exchange on its management port:

1. pitrixd ``GET /v1/issuer-bootstrap``: the issuer's CSR with ``proof = HMAC(token, csr)``, so
   pitrixd signs only the CSR of the VM it gave the token to;
2. pitrixd checks the proof, signs the CSR as a subordinate CA of the installation's root, marks
   the token consumed in its etcd, and ``PUT``s the certificate with ``HMAC(token, certificate)``;
3. metad checks that proof, that the certificate is a CA for its own key and chains to the root
   it was given, stores it next to the key (0600) and starts serving normally.

The proof key is the token's SHA-256 (what pitrixd keeps of it), so neither side sends the token.
Key and CSR are kept in the state directory: a metad restarted mid-exchange offers the same CSR,
and one restarted after it serves with what it stored.

A member of a metadata cluster of several also needs a certificate for its etcd's peers
(:class:`PeerRequest`): it makes that key here too and offers a second CSR beside the issuer's
(``peer_csr``, its own proof), and pitrixd answers both in one ``PUT`` (``peer_certificate``): a
certificate from the peers' CA (``--etcd-peer-ca``) for this key, which it checks like the issuer.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from pitrix import pki
from pitrix.logs import get_logger
from pitrix.paths import write_private

PATH = "/v1/issuer-bootstrap"
ISSUER_CN = "pitrix metadata issuer"
_CSR_LABEL = b"pitrix issuer csr\n"
_CERT_LABEL = b"pitrix issuer certificate\n"
_PEER_CSR_LABEL = b"pitrix etcd peer csr\n"
_PEER_CERT_LABEL = b"pitrix etcd peer certificate\n"
_MEMBERS_LABEL = b"pitrix etcd members\n"
PEER_CN = "pitrix etcd peer"
MAX_BODY = 64 * 1024


class BootstrapError(Exception):
    """The exchange cannot go on (an unreadable token file, a state directory not writable)."""


def proof_key(token: str) -> bytes:
    """What both sides key their proofs with: the token's hex SHA-256 (pitrixd keeps only that)."""
    return hashlib.sha256(token.encode()).hexdigest().encode()


def csr_proof(key: bytes, csr_pem: bytes) -> str:
    return hmac.new(key, _CSR_LABEL + csr_pem, hashlib.sha256).hexdigest()


def certificate_proof(key: bytes, cert_pem: bytes) -> str:
    return hmac.new(key, _CERT_LABEL + cert_pem, hashlib.sha256).hexdigest()


def peer_csr_proof(key: bytes, csr_pem: bytes) -> str:
    return hmac.new(key, _PEER_CSR_LABEL + csr_pem, hashlib.sha256).hexdigest()


def peer_certificate_proof(key: bytes, cert_pem: bytes) -> str:
    return hmac.new(key, _PEER_CERT_LABEL + cert_pem, hashlib.sha256).hexdigest()


def members_document(members: dict[str, str], state: str) -> bytes:
    """The members' list as both sides prove it: canonical JSON."""
    return json.dumps({"members": members, "state": state}, sort_keys=True, separators=(",", ":")).encode()


def members_proof(key: bytes, document: bytes) -> str:
    return hmac.new(key, _MEMBERS_LABEL + document, hashlib.sha256).hexdigest()


def load_members(path: Path) -> tuple[dict[str, str], str]:
    """The members' list a bootstrap stored: ``({name: peer URL}, "new" | "existing")``."""
    doc = json.loads(path.read_text())
    return dict(doc["members"]), str(doc["state"])


def proven(expected: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(expected, given)


@dataclass(frozen=True)
class IssuerFiles:
    cert: Path
    key: Path
    peer_cert: Path | None = None  # a member of several: its etcd's peer certificate and key
    peer_key: Path | None = None
    members: Path | None = None  # and the members' list, where the bootstrap brought it


@dataclass(frozen=True)
class PeerRequest:
    """What a member of several asks for besides its issuer: a peer certificate from ``ca_pem``."""

    ca_pem: bytes  # the peers' CA (public, from userdata): the certificate must be signed by it
    # A member joining a cluster whose issuer exists (members 1..N, a replacement): it asks for
    # no issuer of its own and takes the cluster's from its etcd once it has joined
    # (``pitrix.metad.issuer_share``), so every member signs and trusts the same one.
    joins: bool = False
    # Set where the members' list comes with the certificates (a metadata VM: its peers' addresses
    # are known only once the cloud ran them all): this member's name and peer URL, which the list
    # must hold.
    name: str = ""
    url: str = ""


class IssuerBootstrap:
    """One metad's side of the exchange, over its state directory."""

    def __init__(
        self, state_dir: Path, token: str, root_pem: bytes | None, peer: PeerRequest | None = None
    ) -> None:
        self.folder = state_dir / "issuer"
        self.files = self.files_under(state_dir, peer is not None)
        self._member = (peer.name, peer.url) if peer is not None and peer.name else None
        self._proof_key = proof_key(token)
        self._root = pki.cert_from_pem(root_pem, "root_ca") if root_pem else None
        self.done = asyncio.Event()
        self._log = get_logger("pitrix.metad.issuer-bootstrap")
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        self.wants_issuer = peer is None or not peer.joins
        self.key = self._key(self.files.key) if self.wants_issuer else None
        self.csr = pki.make_csr(self.key, pki.Subject(ISSUER_CN, "pitrix")) if self.key is not None else b""
        self._peer_ca = pki.cert_from_pem(peer.ca_pem, "etcd_peer_ca") if peer is not None else None
        self.peer_key: pki.PrivateKey | None = None
        self.peer_csr = b""
        if self.files.peer_key is not None:
            self.peer_key = self._key(self.files.peer_key)
            self.peer_csr = pki.make_csr(self.peer_key, pki.Subject(PEER_CN, "pitrix"))

    @staticmethod
    def files_under(state_dir: Path, peer: bool = False) -> IssuerFiles:
        folder = state_dir / "issuer"
        if peer:
            return IssuerFiles(
                folder / "issuer.pem",
                folder / "issuer.key",
                folder / "peer.pem",
                folder / "peer.key",
                folder / "members.json",
            )
        return IssuerFiles(folder / "issuer.pem", folder / "issuer.key")

    @staticmethod
    def _key(path: Path) -> pki.PrivateKey:
        try:
            return pki.key_from_pem(path.read_bytes(), path.stem + "_key")
        except (OSError, pki.PKIError):
            key = pki.generate_key()
            write_private(path, pki.key_to_pem(key))
            return key

    def complete(self) -> bool:
        """Whether an earlier run already stored an issuer certificate (and a member's peer
        certificate) for these keys."""
        try:
            if self._member is not None and self.files.members is not None:
                load_members(self.files.members)
            if self.wants_issuer:
                pki.CertificateAuthority.load_pair(self.files.cert, self.files.key)
            peer_cert, peer_key = self.files.peer_cert, self.peer_key
            if peer_cert is not None and peer_key is not None:
                return _for_key(pki.cert_from_pem(peer_cert.read_bytes()), peer_key)
        except (OSError, ValueError, KeyError, TypeError, pki.PKIError):
            return False
        return True

    # -- the exchange -----------------------------------------------------------------------------

    def offer(self) -> dict[str, str]:
        offer = {}
        if self.csr:
            offer = {"csr": self.csr.decode(), "proof": csr_proof(self._proof_key, self.csr)}
        if self.peer_csr:
            offer["peer_csr"] = self.peer_csr.decode()
            offer["peer_proof"] = peer_csr_proof(self._proof_key, self.peer_csr)
        return offer

    def accept(self, doc: Any) -> None:
        """Store the issuer certificate pitrixd sent, after checking it; raises PKIError naming the field."""
        if not isinstance(doc, dict):
            raise pki.PKIError("body", 'must be a JSON object {"certificate", "proof"}')
        members = self._members(doc) if self._member is not None else b""
        if self.key is None:  # a joining member: its peer certificate is all it asked for
            peer = self._peer_certificate(doc)
            if members and self.files.members is not None:
                write_private(self.files.members, members)
            write_private(self.files.peer_cert or self.files.cert, peer)
            self.done.set()
            return
        certificate = doc.get("certificate")
        if not isinstance(certificate, str) or not certificate:
            raise pki.PKIError("certificate", "a PEM certificate is required")
        pem = certificate.encode()
        if not proven(certificate_proof(self._proof_key, pem), doc.get("proof")):
            raise PermissionError("proof: does not match the bootstrap token")
        cert = pki.cert_from_pem(pem)
        # Raises unless it is a CA certificate for this VM's own key.
        pki.CertificateAuthority(cert, self.key)
        if self._root is not None:
            try:
                cert.verify_directly_issued_by(self._root)
            except (ValueError, TypeError, InvalidSignature):
                raise pki.PKIError("certificate", "was not signed by the installation's root") from None
        if self.files.peer_cert is not None:
            # Stored first: the issuer's certificate is what marks the exchange complete.
            peer = self._peer_certificate(doc)
            if members and self.files.members is not None:
                write_private(self.files.members, members)
            write_private(self.files.peer_cert, peer)
        write_private(self.files.cert, pki.cert_to_pem(cert))
        self.done.set()

    def _members(self, doc: dict[str, Any]) -> bytes:
        """The members' list from ``doc``, checked: its proof, its shape, this member in it."""
        assert self._member is not None
        name, url = self._member
        members, state = doc.get("members"), doc.get("state")
        if not isinstance(members, dict) or not all(
            isinstance(k, str)
            and k
            and "=" not in k
            and "," not in k
            and isinstance(v, str)
            and v.startswith("https://")
            for k, v in members.items()
        ):
            raise pki.PKIError("members", "must map each member's name to its peer URL (https://ip:port)")
        if state not in ("new", "existing"):
            raise pki.PKIError("state", 'must be "new" or "existing"')
        if members.get(name) != url:
            raise pki.PKIError("members", f"must list this member {name!r} at {url}")
        document = members_document(members, state)
        if not proven(members_proof(self._proof_key, document), doc.get("members_proof")):
            raise PermissionError("members_proof: does not match the bootstrap token")
        return document

    def _peer_certificate(self, doc: dict[str, Any]) -> bytes:
        """The member's peer certificate from ``doc``, checked: its proof, this VM's peer key, the
        peers' CA."""
        assert self.peer_key is not None and self._peer_ca is not None
        certificate = doc.get("peer_certificate")
        if not isinstance(certificate, str) or not certificate:
            raise pki.PKIError(
                "peer_certificate", "a PEM certificate is required (this metad is a member of several)"
            )
        pem = certificate.encode()
        if not proven(peer_certificate_proof(self._proof_key, pem), doc.get("peer_proof")):
            raise PermissionError("peer_proof: does not match the bootstrap token")
        cert = pki.cert_from_pem(pem, "peer_certificate")
        if not _for_key(cert, self.peer_key):
            raise pki.PKIError("peer_certificate", "is not for this member's peer key")
        try:
            cert.verify_directly_issued_by(self._peer_ca)
        except (ValueError, TypeError, InvalidSignature):
            raise pki.PKIError("peer_certificate", "was not signed by the peers' CA") from None
        return pki.cert_to_pem(cert)

    # -- the waiting server -----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get(PATH, self._get)
        app.router.add_put(PATH, self._put)
        app.router.add_route("*", "/{path:.*}", self._waiting)
        return app

    async def _get(self, request: web.Request) -> web.Response:
        if self.done.is_set():
            return _error(409, "this metad already has its issuer certificate")
        return web.json_response(self.offer())

    async def _put(self, request: web.Request) -> web.Response:
        if self.done.is_set():
            return _error(409, "this metad already has its issuer certificate")
        try:
            doc = json.loads(await request.read())
        except ValueError as exc:
            return _error(400, f"body: is not valid JSON ({exc})", field="body")
        try:
            await asyncio.to_thread(self.accept, doc)
        except PermissionError as exc:
            self._log.warning("issuer certificate refused", reason=str(exc), peer=request.remote)
            return _error(403, str(exc), field="proof")
        except pki.PKIError as exc:
            self._log.warning("issuer certificate refused", reason=str(exc), peer=request.remote)
            return _error(400, str(exc), field=exc.field)
        self._log.info("issuer certificate stored", peer=request.remote)
        return web.json_response({"ok": True})

    async def _waiting(self, request: web.Request) -> web.Response:
        return _error(
            503, "metad is waiting for its issuer certificate (issuer bootstrap)", reason="bootstrapping"
        )


def _for_key(cert: x509.Certificate, key: pki.PrivateKey) -> bool:
    return bool(cert.public_key() == key.public_key())


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, "code": status, **extra}, status=status)


def _self_signed(folder: Path, listen_ip: str) -> tuple[Path, Path]:
    """A throwaway server certificate for the waiting port: pitrixd trusts the proofs, not it."""
    issued = pki.CertificateAuthority.create("pitrix metad bootstrap").issue_server([listen_ip])
    cert, key = folder / "bootstrap-server.pem", folder / "bootstrap-server.key"
    issued.write(cert, key)
    return cert, key


def _prepare(
    state_dir: Path, token_file: Path, root_ca: Path | None, peer: PeerRequest | None = None
) -> tuple[str, IssuerBootstrap]:
    try:
        token = token_file.read_text().strip() if token_file.exists() else ""
        root_pem = root_ca.read_bytes() if root_ca is not None else None
    except OSError as exc:
        raise BootstrapError(f"{exc.filename}: {exc.strerror or exc}") from None
    try:
        return token, IssuerBootstrap(state_dir, token, root_pem, peer)
    except (OSError, pki.PKIError) as exc:
        raise BootstrapError(f"issuer state under {state_dir}: {exc}") from None


async def obtain(
    state_dir: Path,
    token_file: Path,
    root_ca: Path | None,
    listen_ip: str,
    manage_port: int,
    peer: PeerRequest | None = None,
) -> IssuerFiles:
    """The issuer's certificate and key files: stored by an earlier run, or fetched now.

    Serves the exchange on ``listen_ip:manage_port`` until pitrixd has completed it; the token
    file is removed afterwards (the token is spent).
    """
    log = get_logger("pitrix.metad.issuer-bootstrap", listen_ip=listen_ip)
    token, exchange = await asyncio.to_thread(_prepare, state_dir, token_file, root_ca, peer)
    if await asyncio.to_thread(exchange.complete):
        await asyncio.to_thread(token_file.unlink, missing_ok=True)
        return exchange.files
    if not token:
        raise BootstrapError(f"issuer_bootstrap_token_file: {token_file} is missing or empty")
    cert, key = await asyncio.to_thread(_self_signed, exchange.folder, listen_ip)
    context = pki.server_context(cert, key, None)
    runner = web.AppRunner(exchange.app(), handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, listen_ip, manage_port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            raise BootstrapError(
                f"manage_port: cannot listen on {listen_ip}:{manage_port}: {exc.strerror or exc}"
            ) from None
        log.info("waiting for the issuer certificate", port=manage_port)
        await exchange.done.wait()
    finally:
        await runner.cleanup()
        for path in (cert, key):
            await asyncio.to_thread(path.unlink, missing_ok=True)
    await asyncio.to_thread(token_file.unlink, missing_ok=True)  # spent
    log.info("issuer bootstrapped")
    return exchange.files
