"""A certificate's validity dates, read from its DER with the standard library.

The agent checks at start (and before each request) whether its certificate is still good and
when to renew it; the cryptography package for those two dates cost 5 MiB of RSS and ~0.1 CPU-s
at every start. Only notBefore and notAfter are read: the TLS library itself loads and verifies
the certificate (``ssl.SSLContext.load_cert_chain``), and CSRs still come from ``pitrix.pki``.
"""

from __future__ import annotations

import base64
import datetime as dt

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"
_SEQUENCE = 0x30
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_VERSION = 0xA0  # [0] EXPLICIT, present from X.509 v2 on


def _element(der: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``offset``."""
    if offset + 2 > len(der):
        raise ValueError("certificate: truncated DER")
    tag, length = der[offset], der[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        if not 0 < size <= 4 or start + size > len(der):
            raise ValueError("certificate: bad DER length")
        length = int.from_bytes(der[start : start + size], "big")
        start += size
    end = start + length
    if end > len(der):
        raise ValueError("certificate: truncated DER")
    return tag, start, end


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        element = _element(der, start)
        out.append(element)
        start = element[2]
    return out


def _time(der: bytes, tag: int, start: int, end: int) -> dt.datetime:
    text = der[start:end].decode("ascii")
    if not text.endswith("Z"):
        raise ValueError(f"certificate: time not in UTC: {text!r}")
    if tag == _UTC_TIME and len(text) == 13:  # YYMMDDHHMMSSZ; RFC 5280: 50-99 are 19xx
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text
    elif not (tag == _GENERALIZED_TIME and len(text) == 15):  # YYYYMMDDHHMMSSZ
        raise ValueError(f"certificate: unexpected time {text!r}")
    y, mo, d, h, mi, s = (int(text[i : i + n]) for i, n in ((0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 2)))
    return dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.UTC)


def validity(pem: bytes) -> tuple[dt.datetime, dt.datetime]:
    """(notBefore, notAfter), aware UTC, of the first certificate in ``pem``; ValueError if there
    is none or it is malformed."""
    begin = pem.find(_BEGIN)
    end = pem.find(_END, begin)
    if begin < 0 or end < 0:
        raise ValueError("certificate: no PEM certificate")
    der = base64.b64decode(b"".join(pem[begin + len(_BEGIN) : end].split()), validate=True)
    tag, start, stop = _element(der, 0)
    if tag != _SEQUENCE:
        raise ValueError("certificate: not a certificate")
    tag, start, stop = _element(der, start)  # tbsCertificate
    if tag != _SEQUENCE:
        raise ValueError("certificate: not a certificate")
    fields = _children(der, start, stop)
    if fields and fields[0][0] == _VERSION:
        fields = fields[1:]
    # serialNumber, signature, issuer, validity
    if len(fields) < 4 or fields[3][0] != _SEQUENCE:
        raise ValueError("certificate: no validity")
    times = _children(der, fields[3][1], fields[3][2])
    if len(times) != 2:
        raise ValueError("certificate: bad validity")
    return _time(der, *times[0]), _time(der, *times[1])
