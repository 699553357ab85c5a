"""The HTTP/1.1 client the agent talks to metad with: keep-alive connections, TLS, a bound
source address, and nothing else.

Why not aiohttp's client, which the daemons use: an agent runs on every VM and makes two requests
per change (the long-poll's answer, the applied report), on cores its application shares. Measured
on this project's benchmark host, aiohttp's client spent ~150 us of CPU per request against ~25 us
here (the parsing is httptools, the C parser uvicorn serves with), and importing it cost the agent
11.6 MiB of its 55. What it brings that the agent does not need: redirects, cookies, proxies,
compression, tracing, URL normalisation, a multidict per response.

Scope, on purpose: one request at a time per connection (no pipelining), bodies with a
Content-Length or chunked (metad sends one or the other; a body that ends with the connection is
taken as ended), no redirects. A request that fails on a reused keep-alive connection before any
byte of the answer came back is sent once more on a fresh connection when it is idempotent: the
server may close an idle connection at the moment it is picked up (metad restarting does).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

# Methods a repeat cannot harm (RFC 9110 §9.2.2): sent again after a stale keep-alive connection.
_IDEMPOTENT = frozenset({"GET", "PUT", "DELETE", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Idle connections kept per origin; more are opened only while requests overlap, and closed
# after. Two, an agent's steady state: its long-poll holds one connection while the round's
# applied report (or a heartbeat) uses the other. One fewer and every round would connect anew
# (the long-poll's connection, released beside the report's, would be closed); every one more is
# a descriptor and, under mutual TLS, ~50 KiB that metad holds for each agent for good.
IDLE_PER_ORIGIN = 2


class HTTPConnectionClosed(ConnectionError):
    """The server closed the connection before its answer ended."""


class HTTPProtocolError(ConnectionError):
    """The server's answer is not HTTP/1.1 this client can read."""


class _Unanswered(HTTPConnectionClosed):
    """Closed before a byte of the answer came: the request may be sent again when idempotent."""


@dataclass(frozen=True, slots=True)
class Response:
    """One answer, read whole (metad's answers are small; a long-poll's arrives at once)."""

    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a connection goes: the key a kept-alive connection is reused under."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, base: str) -> tuple[Origin, str]:
        """The origin of ``base`` and its path (prefixed to every target sent to it)."""
        try:
            parts = urlsplit(base)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not an http(s) URL: {base!r} ({exc})") from None
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"not an http(s) URL: {base!r}")
        origin = cls(parts.scheme, parts.hostname, port or _DEFAULT_PORTS[parts.scheme])
        return origin, parts.path.rstrip("/")

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"


@dataclass(slots=True)
class _Exchange:
    """The answer being read on a connection."""

    done: asyncio.Future[Response]
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    started: bool = False  # a byte of the answer arrived
    headers_complete: bool = False


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, carrying one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._exchange: _Exchange | None = None
        self._header_name = b""

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's TLS transport is not an asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is None:  # bytes nobody asked for: the connection can no longer be trusted
            self.abort()
            return
        exchange.started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HTTPProtocolError(f"unreadable HTTP answer: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self._exchange
        if exchange is None:
            return
        if exchange.headers_complete and not _framed(exchange.headers):
            self.on_message_complete()  # a body that ends with the connection
            return
        why = f": {exc}" if exc else ""
        self._fail(HTTPConnectionClosed(f"the server closed the connection before answering{why}"))

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._exchange is not None
        self._exchange.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._exchange is not None
        self._exchange.headers_complete = True

    def on_body(self, body: bytes) -> None:
        assert self._exchange is not None
        self._exchange.chunks.append(body)

    def on_message_complete(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is None or exchange.done.done():
            return
        status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.abort()  # after reading the status: the parser is kept, the socket is not
        exchange.done.set_result(Response(status, exchange.headers, b"".join(exchange.chunks)))

    # -- the client's side -------------------------------------------------------------------------

    def send(self, request: bytes, done: asyncio.Future[Response]) -> _Exchange:
        assert self.transport is not None and self._exchange is None
        self._exchange = _Exchange(done)
        self.transport.write(request)
        return self._exchange

    def _fail(self, exc: Exception) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None and not exchange.done.done():
            exchange.done.set_exception(exc)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _framed(headers: dict[str, str]) -> bool:
    return "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()


class HttpClient:
    """Requests to any number of origins over kept-alive connections.

    ``ssl_context`` is used for https origins (None: the system's default verification);
    ``local_address`` is the source address every connection is bound to.
    """

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, local_address: str | None = None
    ) -> None:
        self._ssl = ssl_context
        self._local = (local_address, 0) if local_address else None
        self._idle: dict[Origin, list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._bases: dict[str, tuple[Origin, str]] = {}
        self.connections_made = 0  # tests read it: keep-alive is a behaviour worth checking
        self.closed = False

    async def request(
        self,
        method: str,
        base: str,
        target: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float,
    ) -> Response:
        """``method`` ``target`` (a path, already quoted, and query) under ``base``
        (``scheme://host[:port][/path]``), within ``timeout`` seconds in all, connecting included.
        Raises ValueError for a base that is no http(s) URL, OSError (ConnectionError for a broken
        exchange) or TimeoutError."""
        if self.closed:
            raise HTTPConnectionClosed("the client is closed")
        known = self._bases.get(base)
        if known is None:
            known = self._bases[base] = Origin.parse(base)
        origin, prefix = known
        request = _request_bytes(method, prefix + target, origin, body, headers)
        async with asyncio.timeout(timeout):
            while True:
                conn, reused = await self._connection(origin)
                try:
                    response = await self._exchange(conn, request)
                except _Unanswered:
                    if reused and method in _IDEMPOTENT:
                        continue  # a stale keep-alive connection: once more on a fresh one
                    raise
                self._release(origin, conn)
                return response

    async def _exchange(self, conn: _Connection, request: bytes) -> Response:
        done: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        exchange = conn.send(request, done)
        self._busy.add(conn)
        try:
            return await done
        except HTTPConnectionClosed as exc:
            if exchange.started:
                raise
            raise _Unanswered(str(exc)) from None
        except BaseException:
            # Timed out, cancelled, or unreadable: where the answer stands is unknown, so the
            # connection cannot carry another request.
            conn.abort()
            raise
        finally:
            self._busy.discard(conn)
            if not done.done():
                done.cancel()

    async def _connection(self, origin: Origin) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            tls = self._ssl if self._ssl is not None else ssl.create_default_context()
        _, conn = await loop.create_connection(
            _Connection,
            origin.host,
            origin.port,
            ssl=tls,
            server_hostname=origin.host if tls is not None else None,
            local_addr=self._local,
        )
        self.connections_made += 1
        if self.closed:  # closed while connecting
            conn.abort()
            raise HTTPConnectionClosed("the client is closed")
        return conn, False

    def _release(self, origin: Origin, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if conn.closed or self.closed or len(idle) >= IDLE_PER_ORIGIN:
            conn.abort()
            return
        idle.append(conn)

    async def close(self) -> None:
        """Close every connection; requests still waiting fail with HTTPConnectionClosed."""
        self.closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()
        for conn in list(self._busy):
            conn.abort()
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run


def _request_bytes(
    method: str, target: str, origin: Origin, body: bytes | None, headers: dict[str, str] | None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}"]
    if headers:
        lines.extend(f"{name}: {value}" for name, value in headers.items())
    if body is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head
