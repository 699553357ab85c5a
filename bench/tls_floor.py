"""The floor under metad's idle long-polls: a bare uvloop server that speaks mutual TLS and holds.

``python -m bench.tls_floor --listen-ip IP --cert C --key K --client-ca CA`` listens on a free
port with the TLS settings metad's instance port uses (TLS 1.2 or newer, a client certificate from
CA required, partial chains accepted), prints ``{"ready": true, "port": P, "pid": N}`` and then
reads each connection's request head and never answers. What it holds per connection is what
OpenSSL and uvloop cost; metad's RSS per idle long-poll above it is metad's own (bench.metad_idle).
Not a benchmark of its own: it has no ``main``/``TITLE`` for the runner to find.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys

import uvloop


class Holder(asyncio.Protocol):
    """Keeps the request head it got (as any server must until it answers) and the transport."""

    def __init__(self) -> None:
        self.head = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.head += data


async def hold(args: argparse.Namespace) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(cafile=args.client_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Holder, args.listen_ip, 0, ssl=ctx, backlog=4096)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"ready": True, "port": port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    await stop.wait()
    server.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tls_floor", description=__doc__)
    for flag in ("--listen-ip", "--cert", "--key", "--client-ca"):
        parser.add_argument(flag, required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    uvloop.run(hold(parse_args()))
