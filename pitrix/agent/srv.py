"""confd's ``-srv-record`` / ``-srv-domain``: the backend's nodes from a DNS SRV record.

The standard library has no SRV lookup, and the agent must not pull a DNS library into every
start for a flag few use, so this asks the VM's name servers itself: one UDP question (with
EDNS0, so answers up to 4 KiB fit), servers tried in resolv.conf's order. Done once at start,
before the event loop, as confd does.
"""

from __future__ import annotations

import secrets
import socket
import struct
from pathlib import Path

from pitrix.agent.config import AgentConfig
from pitrix.agent.errors import ConfigError
from pitrix.agent.rootfs import under_root

SRV = 33
# Backends whose nodes are URLs: the record's targets get ``-scheme`` (yunify's confd does so for
# every backend; the others here take host:port).
URL_BACKENDS = ("metad", "etcdv3")


def apply_srv(config: AgentConfig, servers: list[tuple[str, int]] | None = None) -> None:
    """Replace ``config.nodes`` by the SRV record's targets when a record or domain is set."""
    record = config.srv_record
    if config.srv_domain and not record:
        record = f"_{config.backend}._tcp.{config.srv_domain}."
    if not record or config.backend in ("env", "file"):
        return
    if servers is None:
        servers = nameservers(config.root)
    try:
        answers = lookup_srv(record, servers)
    except OSError as exc:
        raise ConfigError(f"srv-record: cannot get nodes from SRV record {record}: {exc}") from None
    if not answers:
        raise ConfigError(f"srv-record: SRV record {record} has no targets")
    nodes = []
    for _, _, port, target in sorted(answers, key=lambda a: (a[0], -a[1])):
        host = target.rstrip(".")
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        nodes.append(f"{config.scheme}://{address}" if config.backend in URL_BACKENDS else address)
    config.nodes = nodes


def nameservers(root: Path) -> list[tuple[str, int]]:
    """The VM's resolv.conf name servers (the host's when the VM has none; 127.0.0.1 at last)."""
    for path in (under_root(root, "/etc/resolv.conf"), Path("/etc/resolv.conf")):
        try:
            text = path.read_text()
        except OSError:
            continue
        found = [
            (parts[1], 53)
            for line in text.splitlines()
            if len(parts := line.split()) >= 2 and parts[0] == "nameserver"
        ]
        if found:
            return found
    return [("127.0.0.1", 53)]


def lookup_srv(
    record: str, servers: list[tuple[str, int]], timeout: float = 3.0
) -> list[tuple[int, int, int, str]]:
    """(priority, weight, port, target) of each SRV answer for ``record``; OSError when no
    server answers or the name does not exist."""
    errors = []
    for host, port in servers:
        try:
            return _ask(record, host, port, timeout)
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc}")
    raise OSError("; ".join(errors) or "no name server")


def _ask(record: str, host: str, port: int, timeout: float) -> list[tuple[int, int, int, str]]:
    ident = secrets.randbelow(65536)
    question = _encode_name(record) + struct.pack("!HH", SRV, 1)
    # One question, recursion desired, and an OPT record announcing a 4096-byte UDP size.
    query = (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 1)
        + question
        + b"\0"
        + struct.pack("!HHIH", 41, 4096, 0, 0)
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.send(query)
        while True:
            reply = sock.recv(65535)
            if len(reply) >= 12 and struct.unpack("!H", reply[:2])[0] == ident:
                break
    return parse_reply(reply)


def parse_reply(reply: bytes) -> list[tuple[int, int, int, str]]:
    """The SRV answers in a DNS reply (OSError for an error answer or a malformed one)."""
    try:
        _, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", reply[:12])
        rcode = flags & 0xF
        if rcode == 3:
            raise OSError("no such name (NXDOMAIN)")
        if rcode:
            raise OSError(f"name server answered with error code {rcode}")
        if flags & 0x0200:
            raise OSError("answer truncated")
        offset = 12
        for _ in range(qdcount):
            _, offset = _decode_name(reply, offset)
            offset += 4
        out = []
        for _ in range(ancount):
            _, offset = _decode_name(reply, offset)
            rtype, _, _, length = struct.unpack("!HHIH", reply[offset : offset + 10])
            offset += 10
            if rtype == SRV:
                priority, weight, port = struct.unpack("!HHH", reply[offset : offset + 6])
                target, _ = _decode_name(reply, offset + 6)
                out.append((priority, weight, port, target))
            offset += length
        return out
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise OSError(f"malformed DNS answer: {exc}") from None


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not raw or len(raw) > 63:
            raise OSError(f"invalid name {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _decode_name(message: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) name at ``offset``, and where the data after it starts."""
    labels: list[str] = []
    end = -1
    for _ in range(128):  # a loop of pointers is malformed, not endless
        length = message[offset]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | message[offset + 1]
            continue
        if length == 0:
            return ".".join(labels) + ".", end if end >= 0 else offset + 1
        labels.append(message[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length
    raise IndexError("name compression loop")
