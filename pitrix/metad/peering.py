"""A single-member embedded etcd moved to the peers' mutual TLS, its data kept: the first step of
a metadata cluster's growth from one member to several.

A metadata cluster of one runs its etcd as ``pitrix`` with peer TLS from its own local CA: no
other member could ever join it. Before pitrixd adds members, this metad makes a peer key (here,
where it is used; pitrixd only sees its CSR), takes back a certificate from the runtime's etcd
peers CA, publishes its issuer in the cluster's etcd (members that join take it from there,
``pitrix.metad.issuer_share``) and restarts its etcd as member ``m0`` with the peers' CA, the same
data directory and the same peer URL (``https://<ip>:<peer port>``, already what a member's is).
etcd keeps its data and its member id across the restart; the new ``--name`` is published as the
member's name when it starts.

What it adopted is kept under ``<state>/issuer/`` (``peer.pem``, ``peer.key``, ``peers-ca.pem``,
``peering.json`` last), so a metad started again with its first flags starts its etcd as that
member (:func:`adopted`). Asked again, it answers what it is: ``member`` set means done.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from pitrix import pki
from pitrix.logs import get_logger
from pitrix.paths import write_private
from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd, EmbeddedEtcdError, EtcdPeers
from pitrix.store.tls import EtcdTLS

PEER_CN = "pitrix etcd peer"  # the CSR's subject; pitrixd sets the cluster's CN on the certificate


class PeeringError(Exception):
    """A peer set-up refused (``field`` names what is wrong) or that cannot be done now."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


@dataclass(frozen=True, slots=True)
class PeeringFiles:
    folder: Path

    @property
    def key(self) -> Path:
        return self.folder / "peer.key"

    @property
    def cert(self) -> Path:
        return self.folder / "peer.pem"

    @property
    def ca(self) -> Path:
        return self.folder / "peers-ca.pem"

    @property
    def record(self) -> Path:
        return self.folder / "peering.json"


def files_under(state_dir: Path) -> PeeringFiles:
    return PeeringFiles(state_dir / "issuer")


def peer_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{port}"


def adopted(state_dir: Path, host: str, peer_port: int) -> tuple[str, EtcdPeers] | None:
    """The member this state directory's etcd became (its name and peers), or None if it never
    left its single-member set-up. The members' list is this member alone: etcd, restarted on its
    data, takes the others from there."""
    files = files_under(state_dir)
    try:
        doc = json.loads(files.record.read_text())
        name, token, cn = str(doc["name"]), str(doc["cluster_token"]), str(doc.get("peer_cn", ""))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PeeringError("peering", f"{files.record} is unreadable: {exc}", 500) from None
    tls = EtcdTLS(files.ca, files.cert, files.key)
    return name, EtcdPeers({name: peer_url(host, peer_port)}, tls, "existing", token, cn)


def _name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value or "=" in value or "," in value or len(value) > 64:
        raise PeeringError(field, "must be a non-empty name without '=' or ',' (at most 64 characters)")
    return value


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


class Peering:
    """The embedded etcd this metad runs, and the move of a single member to the peers' TLS."""

    def __init__(
        self,
        etcd: EmbeddedEtcd,
        store: Store,
        *,
        member: str,
        issuer_cert: Path | None,
        issuer_key: Path | None,
        start_timeout: float,
    ) -> None:
        self.etcd = etcd  # the current one: replaced by the move (its owner stops this one at exit)
        self.store = store
        self.member = member  # "" while a single member
        self.issuer = (issuer_cert, issuer_key)
        self.start_timeout = start_timeout
        self.files = files_under(etcd.state_dir)
        self._lock = asyncio.Lock()
        self._log = get_logger("pitrix.metad.peering", state_dir=str(etcd.state_dir))

    @property
    def peer_url(self) -> str:
        return peer_url(self.etcd.host, self.etcd.peer_port)

    def _key(self) -> pki.PrivateKey:
        try:
            return pki.key_from_pem(self.files.key.read_bytes(), "peer_key")
        except (OSError, pki.PKIError):
            key = pki.generate_key()
            self.files.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(self.files.key, pki.key_to_pem(key))
            return key

    async def status(self) -> dict[str, Any]:
        """What this member is (``member`` empty: a single member) and, until it is one, the CSR
        of the peer key to sign."""
        shown: dict[str, Any] = {"member": self.member, "peer_url": self.peer_url}
        if not self.member:
            key = await asyncio.to_thread(self._key)
            shown["csr"] = pki.make_csr(key, pki.Subject(PEER_CN, "pitrix")).decode()
        return shown

    def _check(self, doc: Any) -> tuple[str, str, str, bytes, bytes]:
        """The set-up asked for, checked field by field (nothing is written before)."""
        if not isinstance(doc, dict):
            raise PeeringError(
                "body", "must be a JSON object {name, peers_ca, peer_certificate, cluster_token, peer_cn}"
            )
        name = _name(doc.get("name"), "name")
        token = _name(doc.get("cluster_token"), "cluster_token")
        cn = doc.get("peer_cn", "")
        if not isinstance(cn, str):
            raise PeeringError("peer_cn", "must be a string (the CN every peer's certificate carries)")
        for field in ("peers_ca", "peer_certificate"):
            if not isinstance(doc.get(field), str) or not doc[field]:
                raise PeeringError(field, "a PEM certificate is required")
        ca = pki.cert_from_pem(doc["peers_ca"].encode(), "peers_ca")
        cert = pki.cert_from_pem(doc["peer_certificate"].encode(), "peer_certificate")
        if cert.public_key() != self._key().public_key():
            raise PeeringError("peer_certificate", "is not for this metad's peer key (GET its csr first)")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise PeeringError("peer_certificate", "was not signed by peers_ca") from None
        if cn and _cn(cert) != cn:
            raise PeeringError("peer_cn", f"the certificate's CN is {_cn(cert)!r}, not {cn!r}")
        return name, token, cn, pki.cert_to_pem(ca), pki.cert_to_pem(cert)

    async def adopt(self, doc: Any) -> dict[str, Any]:
        """Become member ``name`` of a cluster of several, data kept; a re-run finds it done."""
        async with self._lock:
            if self.member:
                wanted = doc.get("name") if isinstance(doc, dict) else None
                if wanted not in (None, self.member):
                    raise PeeringError("name", f"this etcd is member {self.member!r} already", 409)
                return {"member": self.member, "peer_url": self.peer_url, "restarted": False}
            try:
                name, token, cn, ca_pem, cert_pem = await asyncio.to_thread(self._check, doc)
            except pki.PKIError as exc:
                raise PeeringError(exc.field, str(exc).removeprefix(f"{exc.field}: ")) from None
            await asyncio.to_thread(write_private, self.files.ca, ca_pem)
            await asyncio.to_thread(write_private, self.files.cert, cert_pem)
            await self._publish_issuer()
            tls = EtcdTLS(self.files.ca, self.files.cert, self.files.key)
            peers = EtcdPeers({name: self.peer_url}, tls, "existing", token, cn)
            started = time.monotonic()
            await self._restart(name, peers)
            record = {"name": name, "cluster_token": token, "peer_cn": cn}
            await asyncio.to_thread(write_private, self.files.record, json.dumps(record).encode())
            self.member = name
            took = round(time.monotonic() - started, 3)
            self._log.warning("etcd moved to the peers' TLS", member=name, url=self.peer_url, seconds=took)
            return {"member": name, "peer_url": self.peer_url, "restarted": True}

    async def _publish_issuer(self) -> None:
        """The issuer in the cluster's etcd, for the members that join (they sign as this one)."""
        cert, key = self.issuer
        if cert is None or key is None:
            return  # no issuer here (a metad without TLS): nothing for members to share
        from pitrix.metad.issuer_share import ShareError, share

        try:
            await share(self.store, cert, key, mine=True, timeout=self.start_timeout)
        except ShareError as exc:
            raise PeeringError("issuer", str(exc), 503) from None

    async def _restart(self, name: str, peers: EtcdPeers) -> None:
        """The etcd stopped and started again as member ``name``; if that start fails, the single
        member started again as it was (nothing half-applied) and a 503 says why."""
        old = self.etcd
        moved = EmbeddedEtcd(
            old.state_dir,
            host=old.host,
            client_port=old.client_port,
            peer_port=old.peer_port,
            name=name,
            peers=peers,
            startup_timeout=self.start_timeout,
        )
        await old.stop()
        try:
            await moved.start()
        except EmbeddedEtcdError as exc:
            self._log.error("etcd did not start as a member; starting it as before", error=str(exc))
            await moved.stop()
            await old.start()
            old.supervise()
            raise PeeringError("peer_certificate", f"etcd did not start with it: {exc}", 503) from None
        moved.supervise()
        self.etcd = moved
