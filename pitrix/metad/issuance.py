"""What metad records about the certificates it signs, each in the transaction that decides it.

A bootstrap token buys one certificate: the etcd transaction that records the issued certificate
also creates ``/_pitrix/bootstrap-used/<token sha256>``, guarded on that key being absent and on
the mapping still naming the token, so two uses racing each other (on one metad or on two) cannot
both win. The record keeps the certificate and its public key's fingerprint: an agent that lost
the answer (a crash, a dropped connection) and asks again with the same key gets the same
certificate back, never a second one; anybody else is refused.

A renewal replaces a certificate: its transaction schedules the old serial's revocation
(``/_pitrix/revoke-after/<serial>``), and a certificate already replaced cannot renew again, so a
stolen certificate cannot mint a line of successors. :class:`GraceRevoker` turns due entries into
ordinary revocations (``/_pitrix/revoked/<serial>``), which every metad of the cluster enforces.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pitrix import pki
from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger
from pitrix.metad import keyspace
from pitrix.metad.mirror import Mirror
from pitrix.metad.selfview import Mapping
from pitrix.metad.waiters import Waiter
from pitrix.store import Compare, Op, Store

DEFAULT_RENEWAL_GRACE = 60.0


def public_key_sha256(csr_pem: bytes) -> str:
    """The fingerprint of a CSR's public key (hex sha256 of its DER SubjectPublicKeyInfo)."""
    return _spki_sha256(pki.load_csr(csr_pem).public_key())


def _cert_key_sha256(pem: bytes) -> str:
    return _spki_sha256(x509.load_pem_x509_certificate(pem).public_key())


def _spki_sha256(public_key: CertificatePublicKeyTypes) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, slots=True)
class Used:
    """A consumed token's record: whom it was for and what it bought."""

    instance_id: str
    certificate: str
    key_sha256: str
    at: float

    @classmethod
    def parse(cls, raw: str | bytes | None) -> Used | None:
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            return cls(
                str(doc["instance_id"]), str(doc["certificate"]), str(doc["key_sha256"]), float(doc["at"])
            )
        except (ValueError, KeyError, TypeError):
            return None


class TokenUsed(Exception):
    """The token was consumed before, for another key: the caller gets no certificate."""

    def __init__(self, used: Used | None) -> None:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(used.at)) if used else "earlier"
        who = used.instance_id if used else "its instance"
        super().__init__(
            f"the bootstrap token of {who} was already used ({when}); a token buys one certificate"
        )


class AlreadyRenewed(Exception):
    """The caller's certificate was replaced by an earlier renewal."""


def used(mirror: Mirror, token_sha256: str) -> Used | None:
    return Used.parse(mirror.tree.text(keyspace.bootstrap_used(token_sha256)))


def redelivery(record: Used | None, mapping: Mapping, key_sha256: str) -> str | None:
    """The certificate a consumed token already bought, if this request is its buyer asking again."""
    if record is not None and record.instance_id == mapping.instance_id and record.key_sha256 == key_sha256:
        return record.certificate
    return None


def _issued_op(instance_id: str, issued: pki.Issued, via: str) -> Op:
    doc = {
        "serial": pki.serial_hex(issued.serial),
        "not_after": issued.cert.not_valid_after_utc.timestamp(),
        "via": via,
        "at": time.time(),
    }
    return Op("put", keyspace.issued(instance_id), json.dumps(doc).encode())


async def consume(
    store: Store, mapping: Mapping, issued: pki.Issued, chain_pem: bytes
) -> tuple[str, int | None]:
    """Record ``issued`` as what the mapping's token bought, consuming the token; the PEM to answer
    and the revision that recorded it (None: an earlier use with the same key, answered again).

    Raises :class:`TokenUsed` when another request consumed it first (for another key).
    """
    token = mapping.bootstrap_sha256
    certificate = (issued.cert_pem + chain_pem).decode()
    key_sha256 = _cert_key_sha256(issued.cert_pem)
    record = {
        "instance_id": mapping.instance_id,
        "certificate": certificate,
        "key_sha256": key_sha256,
        "serial": pki.serial_hex(issued.serial),
        "at": time.time(),
    }
    guard = [
        Compare(keyspace.bootstrap_used(token), "create", "==", 0),
        # The runtime may have handed the instance a new token meanwhile: the old one buys nothing.
        Compare(
            keyspace.mapping_field(mapping.instance_id, "bootstrap_sha256"), "value", "==", token.encode()
        ),
    ]
    ops = [
        Op("put", keyspace.bootstrap_used(token), json.dumps(record).encode()),
        _issued_op(mapping.instance_id, issued, "bootstrap"),
    ]
    result = await store.txn(guard, ops, [Op("get", keyspace.bootstrap_used(token))])
    if result.succeeded:
        return certificate, result.revision
    winner = Used.parse(result.gets[0].value) if result.gets and result.gets[0] is not None else None
    again = redelivery(winner, mapping, key_sha256)
    if again is not None:
        return again, None
    raise TokenUsed(winner)


async def replace(
    store: Store,
    mapping: Mapping,
    old_serial: int,
    old_not_after: float,
    issued: pki.Issued,
    certificate: str,
    grace: float,
) -> None:
    """Record a renewal: the old certificate is revoked ``grace`` seconds from now (at once if 0).

    Raises :class:`AlreadyRenewed` if the old certificate was replaced before.
    """
    serial = pki.serial_hex(old_serial)
    pending = keyspace.revoke_after(serial)
    now = time.time()
    doc: dict[str, Any] = {
        "instance_id": mapping.instance_id,
        "replaced_by": pki.serial_hex(issued.serial),
        "expires": old_not_after,
    }
    if grace > 0:
        # The successor is kept with the entry: a renewal whose answer was lost, asked again with
        # the same key, gets it back instead of a refusal that would strand the agent.
        successor = {"certificate": certificate, "key_sha256": _cert_key_sha256(issued.cert_pem)}
        revoke = Op("put", pending, json.dumps({**doc, **successor, "at": now + grace}).encode())
    else:
        revoke = Op("put", keyspace.revoked(serial), json.dumps({**doc, "revoked_at": now}).encode())
    guard = [
        Compare(pending, "create", "==", 0),
        Compare(keyspace.revoked(serial), "create", "==", 0),
    ]
    result = await store.txn(guard, [revoke, _issued_op(mapping.instance_id, issued, "renewal")])
    if not result.succeeded:
        raise AlreadyRenewed(f"certificate {serial} was already renewed or revoked; renew with its successor")


def replaced(mirror: Mirror, serial: int) -> tuple[bool, str | None]:
    """Whether a certificate was renewed already, and its successor if ``key_sha256`` asked for it."""
    text = mirror.tree.text(keyspace.revoke_after(pki.serial_hex(serial)))
    return text is not None, text


def successor(pending: str | None, key_sha256: str) -> str | None:
    """The certificate a renewal already bought, if this request is that renewal asked again."""
    try:
        doc = json.loads(pending or "")
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("key_sha256") == key_sha256 and doc.get("certificate"):
        return str(doc["certificate"])
    return None


class GraceRevoker:
    """Turns due ``/_pitrix/revoke-after`` entries into revocations, for as long as metad runs.

    Entries live in etcd, so a metad restarted within a grace still revokes on time; every metad
    of a cluster runs one, and the guarded transaction makes their races harmless.
    """

    def __init__(self, mirror: Mirror, store: Store) -> None:
        self.mirror, self.store = mirror, store
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger("pitrix.metad.grace")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metad-grace-revoker")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    def _due(self) -> tuple[list[tuple[str, dict[str, Any]]], float | None]:
        """Entries due now, and when the next one falls due."""
        node = self.mirror.tree.live(keyspace.REVOKE_AFTER)
        due: list[tuple[str, dict[str, Any]]] = []
        upcoming: float | None = None
        now = time.time()
        for serial, child in node.live_children() if node is not None else ():
            try:
                doc = json.loads(child.value or "")
                at = float(doc["at"])
            except (ValueError, KeyError, TypeError):
                doc, at = {}, now  # unreadable: revoke rather than keep a replaced certificate
            if at <= now:
                due.append((serial, doc))
            elif upcoming is None or at < upcoming:
                upcoming = at
        return due, upcoming

    async def _run(self) -> None:
        retry_at: float | None = None
        while True:
            due, _ = self._due()
            for serial, doc in due:
                try:
                    if not await self._revoke(serial, doc):
                        retry_at = time.time() + 1.0  # another metad got there: wait for its write
                except Exception as exc:  # etcd away: the entry stays and is tried again
                    self._log.warning("grace revocation failed; retrying", serial=serial, error=str(exc))
                    retry_at = time.time() + 1.0
            # Registered before looking again, with no await in between: no entry slips past.
            waiter = Waiter([keyspace.REVOKE_AFTER])
            self.mirror.waiters.add(waiter)
            try:
                due, upcoming = self._due()
                if due and retry_at is None:
                    continue
                wake = (
                    min(t for t in (upcoming, retry_at) if t is not None) if (upcoming or retry_at) else None
                )
                retry_at = None
                timeout = None if wake is None else max(wake - time.time(), 0.0)
                await asyncio.wait({waiter.future}, timeout=timeout)
            finally:
                self.mirror.waiters.remove(waiter)

    async def _revoke(self, serial: str, doc: dict[str, Any]) -> bool:
        """Whether this call revoked it (False: another metad did, or the entry went away)."""
        pending = keyspace.revoke_after(serial)
        kv = await self.store.get(pending)
        if kv is None:
            return False
        entry = {k: v for k, v in doc.items() if k != "at"} | {"revoked_at": time.time(), "reason": "renewed"}
        result = await self.store.txn(
            [Compare(pending, "mod", "==", kv.mod_revision)],
            [Op("put", keyspace.revoked(serial), json.dumps(entry).encode()), Op("delete", pending)],
        )
        if result.succeeded:
            await self.mirror.wait_for_revision(result.revision)
            self._log.info("replaced certificate revoked", serial=serial, instance_id=doc.get("instance_id"))
        return result.succeeded
