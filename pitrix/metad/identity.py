"""Who is asking: the instance a request comes from, proven by its client certificate.

With mutual TLS the certificate's CN (instance id), OU (cluster id) and O (owner) must all agree
with the instance's mapping and its cluster's recorded owner, and its serial (or the instance as a
whole) must not be revoked. Headers never identify anybody. Source-IP identity (metad's model)
is the opt-in legacy mode; there ``X-Forwarded-For`` counts only when the peer is a trusted proxy.

Revocations live in etcd (``/_pitrix/revoked/<serial>``, ``/_pitrix/revoked-instances/<iid>``),
so every metad of a metadata cluster sees them, and a held long-poll depends on its caller's
revocation keys: revoking wakes it, and the re-check refuses it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from pitrix.metad import keyspace
from pitrix.metad.mirror import Mirror
from pitrix.metad.selfview import Mapping
from pitrix.pki import Subject, serial_hex


class Refused(Exception):
    """The caller cannot be identified or is not allowed; the API answers 403."""


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    subject: Subject
    serial: int
    # The etcd keys that revoke this certificate, and every certificate of its instance. Worked
    # out once per connection: a write releasing a thousand long-polls re-checks a thousand callers.
    revocation_key: str = field(init=False, repr=False, compare=False)
    instance_revocation_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "revocation_key", keyspace.revoked(serial_hex(self.serial)))
        object.__setattr__(self, "instance_revocation_key", keyspace.revoked_instance(self.subject.cn))


@dataclass(frozen=True, slots=True)
class Caller:
    """An identified instance: its mapping, and the certificate it proved that with (None: legacy)."""

    mapping: Mapping
    cert: PeerCertificate | None

    def dependencies(self) -> list[str]:
        """Keys whose change may withdraw this caller's right to an answer."""
        deps = [self.mapping.key]
        if self.cert is not None:
            deps.append(self.cert.revocation_key)
            deps.append(self.cert.instance_revocation_key)
            deps.append(keyspace.owner(self.mapping.cluster_id))
        return deps


class _Connection:
    """What metad knows about one TLS connection: its certificate, and the caller it proved."""

    __slots__ = ("caller", "cert", "epoch")

    def __init__(self, cert: PeerCertificate | None) -> None:
        self.cert = cert
        self.caller: Caller | None = None
        self.epoch = -1  # the mirror's identity epoch at which ``caller`` was identified


class PeerCertificates:
    """The verified client certificate of a request's connection, decoded once per connection.

    ``getpeercert()`` builds a fresh dict each call (~25 µs); a write releasing a thousand held
    long-polls re-identifies a thousand callers, so the decoded subject is kept per TLS object.
    """

    def __init__(self) -> None:
        self._by_connection: weakref.WeakKeyDictionary[Any, _Connection]
        self._by_connection = weakref.WeakKeyDictionary()

    def connection(self, request: web.Request) -> _Connection | None:
        """The connection's record, None without TLS (or for an object that cannot be weakly held)."""
        return self.connection_of(request.transport)

    def connection_of(self, transport: asyncio.BaseTransport | None) -> _Connection | None:
        """:meth:`connection` for a transport (a poll parked before aiohttp made a request of it)."""
        if transport is None:
            return None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        try:
            return self._by_connection[ssl_object]
        except KeyError:
            pass
        except TypeError:  # not weak-referenceable: nothing is kept
            return _Connection(_decode(ssl_object))
        record = self._by_connection[ssl_object] = _Connection(_decode(ssl_object))
        return record

    def get(self, request: web.Request) -> PeerCertificate | None:
        record = self.connection(request)
        return record.cert if record is not None else None


def peer_certificate(ssl_object: Any) -> PeerCertificate | None:
    """The verified client certificate of a TLS connection (None: none shown, or no TLS)."""
    return _decode(ssl_object) if ssl_object is not None else None


def _decode(ssl_object: Any) -> PeerCertificate | None:
    info = ssl_object.getpeercert()
    if not info:
        return None
    fields: dict[str, str] = {}
    for rdn in info.get("subject", ()):
        for name, value in rdn:
            fields.setdefault(name, value)
    try:
        serial = int(info.get("serialNumber", ""), 16)
    except ValueError:
        return None
    subject = Subject(
        cn=fields.get("commonName", ""),
        o=fields.get("organizationName"),
        ou=fields.get("organizationalUnitName"),
    )
    return PeerCertificate(subject, serial)


def is_revoked(mirror: Mirror, cert: PeerCertificate) -> bool:
    if mirror.tree.live(cert.revocation_key) is not None:
        return True
    return mirror.tree.live(cert.instance_revocation_key) is not None


class CertificateIdentity:
    """Identity from the verified client certificate, checked against the mapping and owner."""

    mode = "certificate"

    def __init__(self) -> None:
        self.certificates = PeerCertificates()

    def identify(self, request: web.Request, mirror: Mirror) -> Caller:
        return self.identify_transport(request.transport, mirror)

    def identify_transport(self, transport: asyncio.BaseTransport | None, mirror: Mirror) -> Caller:
        record = self.certificates.connection_of(transport)
        cert = record.cert if record is not None else None
        if record is None or cert is None:
            raise Refused("a client certificate is required")
        # Until a write touches a mapping, a revocation or an owner, the last answer stands: the
        # callers a fan-out releases are re-identified by one comparison, not a dozen lookups.
        if record.caller is not None and record.epoch == mirror.identity_epoch:
            return record.caller
        record.caller = None
        caller = self._check(cert, mirror)
        record.caller, record.epoch = caller, mirror.identity_epoch
        return caller

    def _check(self, cert: PeerCertificate, mirror: Mirror) -> Caller:
        if is_revoked(mirror, cert):
            raise Refused(f"certificate {serial_hex(cert.serial)} of {cert.subject.cn} is revoked")
        subject = cert.subject
        mapping = mirror.mappings.get(subject.cn)
        if mapping is None:
            raise Refused(f"certificate names {subject.cn!r}, which is not a mapped instance")
        if subject.ou != mapping.cluster_id:
            raise Refused(f"certificate's cluster {subject.ou!r} is not {subject.cn}'s cluster")
        owner = mirror.tree.text(keyspace.owner(mapping.cluster_id))
        if not owner or subject.o != owner:
            raise Refused(f"certificate's owner {subject.o!r} does not own cluster {mapping.cluster_id}")
        return Caller(mapping, cert)


class SourceIPIdentity:
    """metad's legacy model: the caller is the instance mapped to the connection's source address."""

    mode = "source-ip"

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.trusted_proxies = frozenset(str(ipaddress.ip_address(p)) for p in trusted_proxies)

    def source(self, request: web.Request) -> str | None:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        address = peer[0] if peer else None
        if address is None or address not in self.trusted_proxies:
            return address
        # Behind trusted proxies: the rightmost address a trusted proxy did not add is the client.
        hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
        for hop in reversed([h for h in hops if h]):
            try:
                hop = str(ipaddress.ip_address(hop))
            except ValueError:
                return None
            if hop not in self.trusted_proxies:
                return hop
        return None

    def identify(self, request: web.Request, mirror: Mirror) -> Caller:
        address = self.source(request)
        mapping = mirror.identify(address)
        if mapping is None:
            raise Refused(f"unknown caller {address}: no instance maps to it")
        return Caller(mapping, None)


Identity = CertificateIdentity | SourceIPIdentity


def management_allowed(request: web.Request, mirror: Mirror, certificates: PeerCertificates) -> None:
    """Raise Refused unless the connection carries the runtime's (unrevoked) management certificate."""
    cert = certificates.get(request)
    if cert is None:
        raise Refused("the management API needs the runtime's client certificate")
    if not cert.subject.is_management:
        raise Refused(f"certificate {cert.subject.cn!r} (OU {cert.subject.ou!r}) is not the runtime's")
    if mirror.tree.live(cert.revocation_key) is not None:
        raise Refused(f"certificate {serial_hex(cert.serial)} is revoked")


def refusal(reason: str, headers: dict[str, str] | None = None) -> web.Response:
    response = web.Response(
        status=403,
        text=json.dumps({"error": reason, "code": 403}),
        content_type="application/json",
        headers=headers,
    )
    return response
