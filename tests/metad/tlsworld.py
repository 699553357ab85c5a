"""A metad with mutual TLS and the certificates of the fixture world (c1, c2 of usr-a; c3 of usr-b).

``raw`` sends exact bytes on the wire (no client-side URL normalization), so path-traversal cases
reach metad as written.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pitrix import pki
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.metad.tls import MetadTLS


@dataclass
class Cred:
    """One identity's files and the client context presenting them."""

    cert: Path
    key: Path
    ca: Path
    serial: int

    def context(self) -> ssl.SSLContext:
        return pki.client_context(self.ca, self.cert, self.key)


@dataclass
class TLSWorld:
    ca: pki.CertificateAuthority
    dir: Path
    metad: Metad
    manage: MetadManagementClient
    creds: dict[str, Cred] = field(default_factory=dict)
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    def save(self, name: str, issued: pki.Issued, chain: bytes = b"") -> Cred:
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        issued.write(cert, key, chain)
        self.creds[name] = Cred(cert, key, self.ca_file, issued.serial)
        return self.creds[name]

    def session(self, cred: Cred | None, local_ip: str | None = None) -> aiohttp.ClientSession:
        ctx = cred.context() if cred is not None else pki.client_context(self.ca_file)
        local = (local_ip, 0) if local_ip else None
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, local_addr=local, limit=0))
        self.sessions.append(session)
        return session

    async def get(self, who: str, path: str, **params: Any) -> tuple[int, Any]:
        session = self.session(self.creds[who])
        # JSON asked for: without an Accept metad answers in its text format, as Go metad does.
        headers = {"Accept": "application/json"}
        async with session.get(
            self.metad.instance_url + path, params=params or None, headers=headers
        ) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    async def raw(
        self,
        cred: Cred | None,
        method: str,
        target: str,
        *,
        port: str = "instance",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        local_ip: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> tuple[int, bytes]:
        """One request, written byte for byte; (status, body)."""
        url = self.metad.instance_url if port == "instance" else self.metad.manage_url
        hostport = url.split("://", 1)[1]
        host, _, portnum = hostport.rpartition(":")
        ctx = context or (cred.context() if cred is not None else pki.client_context(self.ca_file))
        reader, writer = await asyncio.open_connection(
            host, int(portnum), ssl=ctx, local_addr=(local_ip, 0) if local_ip else None
        )
        try:
            lines = [f"{method} {target} HTTP/1.1", f"Host: {hostport}", "Connection: close"]
            # JSON unless told otherwise: metad's default is its text format.
            lines += [f"{k}: {v}" for k, v in {"Accept": "application/json", **(headers or {})}.items()]
            lines.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        head, _, payload = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, payload

    async def close(self) -> None:
        for session in self.sessions:
            await session.close()
        await self.manage.close()


def _write_ca(directory: Path, listen_ip: str) -> pki.CertificateAuthority:
    ca = pki.CertificateAuthority.create("pitrix test CA")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    ca.issue_server([listen_ip]).write(directory / "server.crt", directory / "server.key")
    return ca


async def start_world(
    store: Any, listen_ip: str, directory: Path, *, wait_timeout: float = 30.0, renewal_grace: float = 60.0
) -> TLSWorld:
    """A TLS metad on ``listen_ip`` with the issuer configured, and the runtime's management client."""
    ca = await asyncio.to_thread(_write_ca, directory, listen_ip)
    tls = MetadTLS(
        directory / "server.crt", directory / "server.key", directory / "ca.pem", issuer=ca,
        renewal_grace=renewal_grace,
    )  # fmt: skip
    metad = Metad(store, listen_ip, 0, 0, wait_timeout=wait_timeout, keepalive=0.3, tls=tls)
    await metad.start()
    runtime = ca.issue_management()
    await asyncio.to_thread(runtime.write, directory / "runtime.crt", directory / "runtime.key")
    manage = MetadManagementClient(
        metad.manage_url,
        idle_timeout=5.0,
        ca_file=directory / "ca.pem",
        cert_file=directory / "runtime.crt",
        key_file=directory / "runtime.key",
    )
    world = TLSWorld(ca, directory, metad, manage)
    world.creds["runtime"] = Cred(
        directory / "runtime.crt", directory / "runtime.key", world.ca_file, runtime.serial
    )
    return world
