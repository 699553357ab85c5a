"""The CLI's HTTP/1.1 client: asyncio streams, keep-alive, TLS, unix sockets, and nothing else.

Why not aiohttp's client: every ``pitrix`` command is a fresh process, and importing aiohttp took
~0.45 s of a command's ~0.7 s (the suite starts the CLI ~130 times). The agent's client
(pitrix/agent/httpclient.py) reads whole answers only; the CLI also follows server-sent events,
and reaches pitrixd over a unix socket, so it gets this one, on the standard library alone.

Scope, on purpose: one request at a time per connection, bodies with a Content-Length, chunked, or
ended by the connection; no redirects, cookies, proxies or compression. No limit on connections
open at once (a caller may hold a thousand long-polls); a few idle ones are kept for the next
request. A request that finds a kept connection closed before a byte of its answer came back is
sent once more on a fresh one when repeating it cannot harm (pitrixd drops idle connections).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    import ssl

# Methods a repeat cannot harm (RFC 9110 §9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
IDLE_KEPT = 8
_LINE_LIMIT = 1 << 20  # a server-sent event's data line can be large (a whole cluster view)
_PATH_SAFE = "/%:@!$&'()*+,;=~"


class HttpConnectionError(ConnectionError):
    """The server could not be reached, or closed the connection before answering."""


class HttpPayloadError(ConnectionError):
    """The connection broke, or the answer became unreadable, after its status line came."""


class HttpReadTimeout(HttpConnectionError, TimeoutError):
    """A stream stayed silent past its read timeout: a connection lost without a word."""


class _Unanswered(HttpConnectionError):
    """Closed before a byte of the answer came: the request may be sent again when idempotent."""


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes


@dataclass(slots=True, eq=False)  # eq=False: hashed by identity, kept in a set
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def abort(self) -> None:
        self.writer.transport.abort()


class HttpClient:
    """Requests to one server: ``http://host[:port]``, ``https://...`` or ``unix:/path``."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self._unix: str | None = None
        self._tls: ssl.SSLContext | None = None
        if url.startswith("unix:"):
            self._unix, self._host, self._port, self.host_header = url[len("unix:") :], "", 0, "localhost"
        else:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            default = 443 if parts.scheme == "https" else 80
            self._host, self._port = parts.hostname, parts.port or default
            host = f"[{self._host}]" if ":" in self._host else self._host
            self.host_header = host if self._port == default else f"{host}:{self._port}"
            if parts.scheme == "https":
                import ssl  # here: only https pays for it

                self._tls = ssl.create_default_context()
        self._headers = headers or {}
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self.closed = False

    def _where(self) -> str:
        return self._unix if self._unix is not None else f"{self._host}:{self._port}"

    async def _connect(self) -> _Connection:
        try:
            if self._unix is not None:
                reader, writer = await asyncio.open_unix_connection(self._unix, limit=_LINE_LIMIT)
            else:
                reader, writer = await asyncio.open_connection(
                    self._host,
                    self._port,
                    ssl=self._tls,
                    server_hostname=self._host if self._tls is not None else None,
                    limit=_LINE_LIMIT,
                )
        except OSError as exc:
            raise HttpConnectionError(f"cannot connect to {self._where()}: {exc}") from exc
        return _Connection(reader, writer)

    async def _connection(self) -> tuple[_Connection, bool]:
        if self.closed:
            raise HttpConnectionError("the client is closed")
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn, True
            conn.abort()
        return await self._connect(), False

    def _release(self, conn: _Connection, headers: dict[str, str]) -> None:
        self._busy.discard(conn)
        keep = "close" not in headers.get("connection", "").lower()
        if keep and not self.closed and len(self._idle) < IDLE_KEPT:
            self._idle.append(conn)
        else:
            conn.abort()

    def _request_bytes(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str] | None
    ) -> bytes:
        path, sep, query = target.partition("?")
        lines = [f"{method} {quote(path, safe=_PATH_SAFE)}{sep}{query} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in {**self._headers, **(headers or {})}.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    async def _start(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str] | None
    ) -> tuple[_Connection, int, str, dict[str, str]]:
        """Send the request; the connection it went on and the answer's status and headers."""
        request = self._request_bytes(method, target, body, headers)
        while True:
            conn, reused = await self._connection()
            self._busy.add(conn)
            try:
                status, reason, got = await self._head(conn, request)
            except _Unanswered:
                self._busy.discard(conn)
                conn.abort()
                if reused and method in _IDEMPOTENT:
                    continue  # a kept connection the server had closed: once more on a fresh one
                raise
            except BaseException:
                self._busy.discard(conn)
                conn.abort()
                raise
            return conn, status, reason, got

    @staticmethod
    async def _head(conn: _Connection, request: bytes) -> tuple[int, str, dict[str, str]]:
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            line = await conn.reader.readline()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            raise _Unanswered(f"the server closed the connection: {exc}") from exc
        if not line:
            raise _Unanswered("the server closed the connection before answering")
        try:
            version, status, *reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
            headers: dict[str, str] = {}
            while (raw := await conn.reader.readline()) not in (b"\r\n", b"\n"):
                if not raw:
                    raise asyncio.IncompleteReadError(b"", None)
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            return int(status), reason[0] if reason else "", headers
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise HttpPayloadError(f"unreadable answer: {exc!r}") from exc

    @staticmethod
    async def _chunks(conn: _Connection, headers: dict[str, str]) -> AsyncIterator[bytes]:
        """The answer's body as it arrives (an empty chunk never)."""
        reader = conn.reader
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass  # trailers
                        return
                    yield await reader.readexactly(size)
                    await reader.readexactly(2)
            elif "content-length" in headers:
                left = int(headers["content-length"])
                while left > 0:
                    data = await reader.read(min(left, 1 << 16))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", left)
                    left -= len(data)
                    yield data
            else:
                headers["connection"] = "close"  # the body ends with the connection
                while data := await reader.read(1 << 16):
                    yield data
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise HttpPayloadError(f"the answer was cut short: {exc!r}") from exc

    async def request(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None,
    ) -> Response:
        """``method`` ``target`` (path and query), the whole answer within ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            conn, status, reason, got = await self._start(method, target, body, headers)
            try:
                data = b"".join([chunk async for chunk in self._chunks(conn, got)])
            except BaseException:
                self._busy.discard(conn)
                conn.abort()
                raise
        self._release(conn, got)
        return Response(status, reason, got, data)

    async def stream(
        self, method: str, target: str, *, read_timeout: float, headers: dict[str, str] | None = None
    ) -> AsyncGenerator[Response | bytes, None]:
        """The answer's head (a Response with an empty body), then its body's chunks as they come;
        :class:`HttpReadTimeout` when none comes for ``read_timeout`` seconds."""
        try:
            async with asyncio.timeout(read_timeout):
                conn, status, reason, got = await self._start(method, target, None, headers)
        except TimeoutError as exc:
            raise HttpReadTimeout(f"no answer within {read_timeout:g}s") from exc
        try:
            yield Response(status, reason, got, b"")
            chunks = self._chunks(conn, got)
            while True:
                try:
                    async with asyncio.timeout(read_timeout):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise HttpReadTimeout(f"nothing came for {read_timeout:g}s") from exc
                yield chunk
        finally:
            # Read to its end or not, a stream's connection is not worth keeping.
            self._busy.discard(conn)
            conn.abort()

    async def close(self) -> None:
        """Close every connection; requests still under way fail."""
        self.closed = True
        for conn in [*self._idle, *self._busy]:
            conn.abort()
        self._idle.clear()
        self._busy.clear()
        await asyncio.sleep(0)  # let the transports' connection_lost callbacks run
