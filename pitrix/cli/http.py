"""The CLI's HTTP/1.1 client on asyncio streams: keep-alive, TLS, unix sockets, and nothing else.

Why not aiohttp's client: every ``pitrix`` command is a fresh process, and importing aiohttp took
~0.45 s of a command's ~0.7 s (the suite starts the CLI ~130 times). The agent's client
(pitrix/agent/httpclient.py) reads whole answers only; the CLI also follows server-sent events,
and reaches pitrixd over a unix socket, so it gets this one, on the standard library alone.

The exchange itself (address, request bytes, framing, keep-alive, the one safe retry) is
pitrix/cli/httpcore.py's, shared with the blocking client a typed command uses
(pitrix/cli/blocking.py); this module adds asyncio's connections and timeouts, for callers that
hold many requests at once (the demo, benches, tests, a thousand long-polls).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager

from pitrix.cli.httpcore import (
    IDLE_KEPT,
    LINE_LIMIT,
    Conn,
    HttpConnectionError,
    HttpCore,
    HttpPayloadError,
    HttpReadTimeout,
    Response,
)

__all__ = [
    "IDLE_KEPT",
    "HttpClient",
    "HttpConnectionError",
    "HttpPayloadError",
    "HttpReadTimeout",
    "Response",
]


class _Connection(Conn):
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def readline(self) -> bytes:
        return await self.reader.readline()

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def read(self, n: int) -> bytes:
        return await self.reader.read(n)

    def reusable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def abort(self) -> None:
        self.writer.transport.abort()


class HttpClient(HttpCore):
    """Requests to one server: ``http://host[:port]``, ``https://...`` or ``unix:/path``."""

    async def _connect(self) -> Conn:
        where = self.endpoint
        try:
            if where.unix is not None:
                reader, writer = await asyncio.open_unix_connection(where.unix, limit=LINE_LIMIT)
            else:
                reader, writer = await asyncio.open_connection(
                    where.host,
                    where.port,
                    ssl=where.tls,
                    server_hostname=where.host if where.tls is not None else None,
                    limit=LINE_LIMIT,
                )
        except OSError as exc:
            raise HttpConnectionError(f"cannot connect to {self._where()}: {exc}") from exc
        return _Connection(reader, writer)

    def within(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(seconds)

    async def _settle(self) -> None:
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run
