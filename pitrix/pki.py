"""pitrixd's certificate authority: who may talk to a metad, proven by certificates it signed.

Every identity in pitrix is a certificate from one CA that pitrixd owns (kept in etcd as PEM):
a server certificate per metad (its IP as SAN, so agents verify the address they dialled), a
short-lived client certificate per instance (CN = instance id, O = owner, OU = cluster id), and
the runtime's management certificate (CN = ``pitrix-runtime``, OU = ``management``). Keys are
ECDSA P-256: signing thousands of instance certificates must cost milliseconds, not seconds.

A CA may also issue a subordinate CA (path length 0) for a metadata cluster, so a metad can sign
renewals from CSRs without holding pitrixd's root key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pitrix.certtime import BACKDATE
from pitrix.certtime import RENEW_AT as RENEW_AT  # re-exported: pki.RENEW_AT, pki.renewal_time
from pitrix.certtime import renewal_time as renewal_time

INSTANCE_LIFETIME = dt.timedelta(hours=24)
SERVER_LIFETIME = dt.timedelta(days=365)
MANAGEMENT_LIFETIME = dt.timedelta(days=365)
CA_LIFETIME = dt.timedelta(days=3650)
RUNTIME_CN = "pitrix-runtime"
MANAGEMENT_OU = "management"
# BACKDATE, RENEW_AT and renewal_time live in certtime (no cryptography there: the agent uses them).


PrivateKey = ec.EllipticCurvePrivateKey


class PKIError(ValueError):
    """A certificate, key or CSR is malformed, or does not say what it must; names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generate_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_from_pem(data: bytes, field: str = "key") -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PKIError(field, f"is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(field, "must be an ECDSA key")
    return key


def cert_from_pem(data: bytes, field: str = "certificate") -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PKIError(field, f"is not a PEM certificate ({exc})") from None


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, o: str | None = None, ou: str | None = None) -> x509.Name:
    for field, value in (("CN", cn), ("O", o), ("OU", ou)):
        if value is not None and (not isinstance(value, str) or not value or len(value) > 64):
            raise PKIError(field, f"{value!r} must be a non-empty string of at most 64 characters")
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if o is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o))
    if ou is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name(attrs)


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else bytes(value).decode(errors="replace")


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a certificate names: CN, O and OU (instance id, owner, cluster id for an instance)."""

    cn: str
    o: str | None = None
    ou: str | None = None

    @classmethod
    def of(cls, name: x509.Name) -> Subject:
        return cls(
            cn=_attr(name, NameOID.COMMON_NAME) or "",
            o=_attr(name, NameOID.ORGANIZATION_NAME),
            ou=_attr(name, NameOID.ORGANIZATIONAL_UNIT_NAME),
        )

    @property
    def is_management(self) -> bool:
        return self.cn == RUNTIME_CN and self.ou == MANAGEMENT_OU


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key (None when signed from a CSR, whose key stays with its owner)."""

    cert: x509.Certificate
    key: PrivateKey | None

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        if self.key is None:
            raise PKIError("key", "was never seen by the CA (the certificate was signed from a CSR)")
        return key_to_pem(self.key)

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    @property
    def subject(self) -> Subject:
        return Subject.of(self.cert.subject)

    def write(self, cert_path: Path, key_path: Path, chain: bytes = b"") -> None:
        """Write the certificate (followed by ``chain``) and the key (mode 0600)."""
        cert_path.write_bytes(self.cert_pem + chain)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self.key_pem)


def make_csr(key: PrivateKey, subject: Subject) -> bytes:
    """A CSR for ``subject``, PEM: how an agent asks for its renewed certificate."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(subject.cn, subject.o, subject.ou))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise PKIError("csr", f"is not a PEM certificate signing request ({exc})") from None
    if not csr.is_signature_valid:
        raise PKIError("csr", "signature does not match its public key")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise PKIError("csr", "public key must be ECDSA")
    return csr


class CertificateAuthority:
    """A CA certificate with its key; signs every identity of one pitrix installation."""

    def __init__(self, cert: x509.Certificate, key: PrivateKey) -> None:
        if cert.public_key() != key.public_key():
            raise PKIError("key", "does not belong to the CA certificate")
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise PKIError("certificate", "is not a CA certificate (basicConstraints CA:TRUE)")
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, name: str = "pitrix CA", lifetime: dt.timedelta = CA_LIFETIME) -> CertificateAuthority:
        key = generate_key()
        subject = _name(name, "pitrix")
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    # -- persistence ------------------------------------------------------------------------------

    def to_pem(self) -> bytes:
        """Certificate then key, PEM: what pitrixd stores in etcd."""
        return cert_to_pem(self.cert) + key_to_pem(self.key)

    @classmethod
    def from_pem(cls, data: bytes) -> CertificateAuthority:
        text = data.decode("ascii", errors="replace")
        marker = "-----END CERTIFICATE-----"
        if marker not in text:
            raise PKIError("certificate", "no PEM certificate in the CA document")
        cert_part, key_part = text.split(marker, 1)
        return cls(cert_from_pem((cert_part + marker).encode()), key_from_pem(key_part.encode()))

    def save(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self.to_pem())

    @classmethod
    def load(cls, path: Path) -> CertificateAuthority:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise PKIError("ca", f"{path}: {exc.strerror or exc}") from None
        return cls.from_pem(data)

    @classmethod
    def load_pair(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        """A CA from separate certificate and key files (a metad's issuer)."""
        try:
            cert_data, key_data = cert_path.read_bytes(), key_path.read_bytes()
        except OSError as exc:
            raise PKIError("issuer", f"{exc.filename}: {exc.strerror or exc}") from None
        return cls(cert_from_pem(cert_data, "issuer_cert"), key_from_pem(key_data, "issuer_key"))

    @property
    def cert_pem(self) -> bytes:
        return cert_to_pem(self.cert)

    @property
    def subject(self) -> Subject:
        return Subject.of(self.cert.subject)

    # -- issuing ----------------------------------------------------------------------------------

    def _sign(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        lifetime: dt.timedelta,
        usage: x509.ObjectIdentifier | list[x509.ObjectIdentifier],
        sans: list[x509.GeneralName] | None = None,
    ) -> x509.Certificate:
        now = _now()
        not_after = min(now + lifetime, self.cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(usage if isinstance(usage, list) else [usage]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_server(
        self,
        addresses: Iterable[str],
        name: str = "pitrix-metad",
        lifetime: dt.timedelta = SERVER_LIFETIME,
        *,
        client_auth: bool = False,
    ) -> Issued:
        """A metad's server certificate; every address (IP or DNS name) it is dialled at is a SAN.

        ``client_auth`` also lets it authenticate as a client: an etcd member presents the same
        certificate to its peers and to its own gRPC gateway, which both demand a client usage.
        """
        key = generate_key()
        cert = self.sign_server_key(key.public_key(), addresses, name, lifetime, client_auth=client_auth)
        return Issued(cert, key)

    def sign_server_key(
        self,
        public_key: ec.EllipticCurvePublicKey,
        addresses: Iterable[str],
        name: str,
        lifetime: dt.timedelta = SERVER_LIFETIME,
        *,
        client_auth: bool = False,
    ) -> x509.Certificate:
        """:meth:`issue_server` for a key held elsewhere (an etcd member's peer key, from its CSR)."""
        sans: list[x509.GeneralName] = []
        for address in addresses:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(address)))
            except ValueError:
                if not address or "/" in address or " " in address:
                    raise PKIError(
                        "addresses", f"{address!r} is neither an IP address nor a DNS name"
                    ) from None
                sans.append(x509.DNSName(address))
        if not sans:
            raise PKIError("addresses", "a server certificate needs at least one address")
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
        if client_auth:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        return self._sign(_name(name, "pitrix"), public_key, lifetime, usages, sans)

    def issue_instance(
        self, instance_id: str, owner: str, cluster_id: str, lifetime: dt.timedelta = INSTANCE_LIFETIME
    ) -> Issued:
        """An instance's client certificate: the only proof metad accepts of who is asking."""
        key = generate_key()
        subject = _name(instance_id, owner, cluster_id)
        return Issued(self._sign(subject, key.public_key(), lifetime, ExtendedKeyUsageOID.CLIENT_AUTH), key)

    def issue_client(self, subject: Subject, lifetime: dt.timedelta = SERVER_LIFETIME) -> Issued:
        """A client certificate naming ``subject`` (a private etcd's client, say)."""
        key = generate_key()
        name = _name(subject.cn, subject.o, subject.ou)
        return Issued(self._sign(name, key.public_key(), lifetime, ExtendedKeyUsageOID.CLIENT_AUTH), key)

    def issue_management(self, lifetime: dt.timedelta = MANAGEMENT_LIFETIME) -> Issued:
        """pitrixd's certificate for metad's management API."""
        key = generate_key()
        subject = _name(RUNTIME_CN, "pitrix", MANAGEMENT_OU)
        return Issued(self._sign(subject, key.public_key(), lifetime, ExtendedKeyUsageOID.CLIENT_AUTH), key)

    def issue_subordinate(self, name: str, lifetime: dt.timedelta = SERVER_LIFETIME) -> CertificateAuthority:
        """A CA that can sign leaves only (path length 0): a metadata cluster's renewal issuer."""
        key = generate_key()
        return CertificateAuthority(self.sign_subordinate(name, key.public_key(), lifetime), key)

    def sign_subordinate(
        self, name: str, public_key: ec.EllipticCurvePublicKey, lifetime: dt.timedelta = SERVER_LIFETIME
    ) -> x509.Certificate:
        """A path-length-0 CA certificate for a key held elsewhere (a metadata VM's, from its CSR)."""
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(_name(name, "pitrix"))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + lifetime, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def sign_csr(
        self,
        csr_pem: bytes,
        expected: Subject | None = None,
        lifetime: dt.timedelta = INSTANCE_LIFETIME,
        *,
        assign: Subject | None = None,
    ) -> Issued:
        """A client certificate for a CSR; with ``expected``, only if the CSR names exactly that subject.

        Only CN, O and OU are taken from the CSR, never its extensions: a renewal cannot ask for
        a CA flag, a server usage or an alternative name. With ``assign`` the certificate names
        that subject whatever the CSR asks (a bootstrap: the caller proved who it is otherwise and
        may not know its own cluster yet); only the CSR's public key is used then.
        """
        csr = load_csr(csr_pem)
        subject = assign or Subject.of(csr.subject)
        if expected is not None and subject != expected:
            raise PKIError(
                "csr",
                f"subject {subject.cn}/{subject.o}/{subject.ou} is not the caller's "
                f"{expected.cn}/{expected.o}/{expected.ou}",
            )
        public_key = csr.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        name = _name(subject.cn, subject.o, subject.ou)
        return Issued(self._sign(name, public_key, lifetime, ExtendedKeyUsageOID.CLIENT_AUTH), None)

    def verify(self, cert: x509.Certificate) -> None:
        """Raise PKIError unless ``cert`` was signed by this CA and is valid now."""
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise PKIError(
                "certificate", f"was not issued by {self.subject.cn} ({exc or 'bad signature'})"
            ) from None
        now = _now()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise PKIError("certificate", f"is not valid now (valid until {cert.not_valid_after_utc})")


def _key_usage(ca: bool) -> x509.KeyUsage:
    """CAs sign certificates; leaves sign handshakes and agree keys (ECDHE)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


class RevocationList:
    """Serial numbers that must no longer be accepted, as JSON a metad can load and reload.

    Certificates are short-lived, so a serial need only be kept until its certificate expires;
    ``prune`` drops those whose expiry passed.
    """

    def __init__(self, entries: dict[int, float] | None = None) -> None:
        # serial → expiry of the revoked certificate (seconds since the epoch; 0 = unknown, kept).
        self.entries: dict[int, float] = dict(entries or {})

    def __contains__(self, serial: object) -> bool:
        return serial in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def revoke(self, cert_or_serial: x509.Certificate | int) -> int:
        if isinstance(cert_or_serial, x509.Certificate):
            serial = cert_or_serial.serial_number
            self.entries[serial] = cert_or_serial.not_valid_after_utc.timestamp()
        else:
            serial = int(cert_or_serial)
            self.entries.setdefault(serial, 0.0)
        return serial

    def prune(self, now: float | None = None) -> int:
        cutoff = _now().timestamp() if now is None else now
        gone = [s for s, expiry in self.entries.items() if expiry and expiry < cutoff]
        for serial in gone:
            del self.entries[serial]
        return len(gone)

    def to_json(self) -> str:
        return json.dumps(
            {"revoked": [{"serial": f"{s:x}", "expires": e} for s, e in sorted(self.entries.items())]}
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> RevocationList:
        try:
            doc = json.loads(text)
            entries = {int(item["serial"], 16): float(item.get("expires", 0)) for item in doc["revoked"]}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PKIError("revoked", f"is not a revocation list ({exc})") from None
        return cls(entries)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RevocationList:
        try:
            return cls.from_json(path.read_bytes())
        except OSError as exc:
            raise PKIError("revoked", f"{path}: {exc.strerror or exc}") from None


def serial_hex(serial: int) -> str:
    """The spelling of a serial in URLs and etcd keys: lowercase hex, no leading zeros."""
    return f"{serial:x}"


def parse_serial(text: str) -> int:
    try:
        value = int(text, 16)
    except ValueError:
        raise PKIError("serial", f"{text!r} is not a hexadecimal serial number") from None
    if value <= 0:
        raise PKIError("serial", "must be positive")
    return value


# -- TLS contexts ---------------------------------------------------------------------------------


def server_context(cert_file: Path, key_file: Path, client_ca: Path | None) -> ssl.SSLContext:
    """A server context; with ``client_ca``, a client certificate from that CA is required.

    Partial chains are accepted so that ``client_ca`` may be a subordinate CA alone: a metad
    pinning its own cluster's issuer refuses certificates the root signed for anyone else.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise PKIError(
            "tls_cert/tls_key", f"{cert_file}, {key_file}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise PKIError("client_ca", f"{client_ca}: {getattr(exc, 'strerror', None) or exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def client_context(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A client context trusting ``ca_file``, presenting ``cert_file`` (+ chain) if given."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise PKIError("ca", f"{ca_file}: {getattr(exc, 'strerror', None) or exc}") from None
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if cert_file is not None:
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise PKIError("cert/key", f"{cert_file}: {getattr(exc, 'strerror', None) or exc}") from None
    return ctx


__all__ = [
    "CertificateAuthority",
    "Issued",
    "PKIError",
    "RevocationList",
    "Subject",
    "client_context",
    "generate_key",
    "make_csr",
    "parse_serial",
    "serial_hex",
    "server_context",
]
