"""Name lookups behind confd's ``lookupIP`` and ``lookupSRV``.

Addresses come from the system resolver (``getaddrinfo``: /etc/hosts, then DNS). SRV records need
a DNS query, which the standard library cannot make, so a minimal one-question UDP client lives
here; its name servers are those of /etc/resolv.conf unless the caller names others.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

TYPE_SRV = 33
CLASS_IN = 1


@dataclass(slots=True)
class SRV:
    """Go's ``net.SRV`` (field order as Go's, for printing)."""

    Target: str
    Port: int
    Priority: int
    Weight: int


def lookup_ip(host: str) -> list[str]:
    """Every address of ``host``, as strings, sorted; empty when it does not resolve."""
    import socket  # here: only templates that call lookupIP or lookupSRV need it

    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return []
    addrs = {str(info[4][0]).split("%", 1)[0] for info in infos}
    return sorted(addrs)


def system_nameservers(resolv_conf: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    servers: list[tuple[str, int]] = []
    try:
        text = Path(resolv_conf).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            servers.append((parts[1], 53))
    return servers or [("127.0.0.1", 53)]


def _encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not raw or len(raw) > 63:
            raise ValueError(f"bad DNS name {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    return bytes(out)


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    labels: list[str] = []
    end = -1
    hops = 0
    while True:
        length = msg[off]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = off + 2
            off = ((length & 0x3F) << 8) | msg[off + 1]
            hops += 1
            if hops > 64:
                raise ValueError("DNS name compression loop")
            continue
        off += 1
        if length == 0:
            break
        labels.append(msg[off : off + length].decode("ascii", "replace"))
        off += length
    return ".".join(labels) + ".", (end if end >= 0 else off)


def build_query(qname: str, qtype: int, ident: int) -> bytes:
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)  # recursion desired
    return header + _encode_name(qname) + struct.pack("!HH", qtype, CLASS_IN)


def parse_srv_answer(msg: bytes, ident: int) -> list[SRV]:
    rid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if rid != ident or not flags & 0x8000:
        raise ValueError("not an answer to our query")
    if flags & 0x000F:
        raise LookupError(f"DNS error code {flags & 0x000F}")
    off = 12
    for _ in range(qd):
        _, off = _read_name(msg, off)
        off += 4
    records: list[SRV] = []
    for _ in range(an):
        _, off = _read_name(msg, off)
        rtype, _rclass, _ttl, rdlen = struct.unpack("!HHIH", msg[off : off + 10])
        off += 10
        if rtype == TYPE_SRV:
            prio, weight, port = struct.unpack("!HHH", msg[off : off + 6])
            target, _ = _read_name(msg, off + 6)
            records.append(SRV(target, port, prio, weight))
        off += rdlen
    return records


def lookup_srv(
    service: str,
    proto: str,
    name: str,
    nameservers: list[tuple[str, int]] | None = None,
    timeout: float = 2.0,
) -> list[SRV]:
    """SRV records of ``_service._proto.name`` (or ``name`` when both are empty), sorted as confd sorts.

    Empty when nothing answers or the name has no such records: confd shows no error either.
    """
    qname = name if not service and not proto else f"_{service}._{proto}.{name}"
    servers = nameservers if nameservers is not None else system_nameservers()
    import socket

    for host, port in servers:
        # os.urandom rather than secrets: secrets loads hashlib and with it OpenSSL (4 MiB).
        ident = int.from_bytes(os.urandom(2), "big")
        try:
            query = build_query(qname, TYPE_SRV, ident)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                sock.connect((host, port))  # connected: a refused port fails at once, not at the timeout
                sock.send(query)
                reply = sock.recv(65535)
            records = parse_srv_answer(reply, ident)
        except (OSError, ValueError, LookupError, struct.error, IndexError):
            continue
        records.sort(key=lambda r: f"{r.Target}{r.Port}{r.Priority}{r.Weight}")
        return records
    return []
