"""The HTTP/1.1 exchange both CLI clients share: where to connect, what to send, how to read.

The CLI has two transports over this one core: asyncio streams (pitrix/cli/http.py: the demo,
benches, tests and ``nodes ssh``, which hold many requests at once) and blocking sockets
(pitrix/cli/blocking.py: a command typed at a prompt, which sends its requests one after another
and should not pay ``import asyncio``, half of its start-up). A transport supplies connections
(:class:`Conn`) and a way to bound a request's time; the address, TLS context, request bytes,
status line, headers, body framing, keep-alive pool and the one safe retry live here, once.

The reading methods are coroutines on both transports: a blocking connection's never suspend, so a
coroutine built on them runs to its end in one step, without an event loop
(``pitrix.cli.blocking.run_blocking``). This module imports neither asyncio nor ssl (ssl only for an
``https://`` address) so that the blocking path stays light.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    import ssl
    from contextlib import AbstractAsyncContextManager

# Methods a repeat cannot harm (RFC 9110 §9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
IDLE_KEPT = 8
LINE_LIMIT = 1 << 20  # a server-sent event's data line can be large (a whole cluster view)
_PATH_SAFE = "/%:@!$&'()*+,;=~"
# What a broken or garbled connection raises while an answer is read (asyncio's short reads are
# EOFErrors, its over-long lines ValueErrors; a blocking connection raises the same).
READ_ERRORS = (ConnectionError, EOFError, ValueError)


class HttpConnectionError(ConnectionError):
    """The server could not be reached, or closed the connection before answering."""


class HttpPayloadError(ConnectionError):
    """The connection broke, or the answer became unreadable, after its status line came."""


class HttpReadTimeout(HttpConnectionError, TimeoutError):
    """A stream stayed silent past its read timeout: a connection lost without a word."""


class Unanswered(HttpConnectionError):
    """Closed before a byte of the answer came: the request may be sent again when idempotent."""


class Response:
    """An answer: status, reason, headers (names lower-cased; a repeated header keeps its last
    value) and body. A plain class: the dataclasses module would cost a command a fifth of
    Python's own start."""

    __slots__ = ("body", "headers", "reason", "status")

    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.reason!r}, {self.headers!r}, {self.body!r})"


class Endpoint:
    """``http://host[:port]``, ``https://...`` (the system's CAs, host name checked) or
    ``unix:/path``, parsed once for either transport."""

    __slots__ = ("host", "host_header", "port", "tls", "unix")

    def __init__(self, url: str) -> None:
        self.unix: str | None = None
        self.tls: ssl.SSLContext | None = None
        if url.startswith("unix:"):
            self.unix, self.host, self.port, self.host_header = url[len("unix:") :], "", 0, "localhost"
            return
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        self.host, self.port = parts.hostname, parts.port or default
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default else f"{host}:{self.port}"
        if parts.scheme == "https":
            import ssl  # here: only https pays for it

            self.tls = ssl.create_default_context()

    def where(self) -> str:
        return self.unix if self.unix is not None else f"{self.host}:{self.port}"


class Conn:
    """One connection, as the core reads and writes it; each transport makes its own."""

    __slots__ = ()

    async def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def readline(self) -> bytes:
        """Up to and with ``\\n``; what is left at the end of the stream; ValueError past LINE_LIMIT."""
        raise NotImplementedError

    async def readexactly(self, n: int) -> bytes:
        """``n`` bytes, or an EOFError."""
        raise NotImplementedError

    async def read(self, n: int) -> bytes:
        """What has come, at most ``n`` bytes, at least one; ``b""`` at the end of the stream."""
        raise NotImplementedError

    def reusable(self) -> bool:
        """Whether a new request may go on it (the server has not closed it)."""
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class HttpCore:
    """Requests to one server: one at a time per connection, bodies with a Content-Length, chunked,
    or ended by the connection; no redirects, cookies, proxies or compression. No limit on
    connections open at once (a caller may hold a thousand long-polls); a few idle ones are kept
    for the next request. A request that finds a kept connection closed before a byte of its
    answer came back is sent once more on a fresh one when repeating it cannot harm (pitrixd drops
    idle connections)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.endpoint = Endpoint(url)
        self.host_header = self.endpoint.host_header
        self._headers = headers or {}
        self._idle: list[Conn] = []
        self._busy: set[Conn] = set()
        self.closed = False

    # -- what a transport supplies ----------------------------------------------------------------

    async def _connect(self) -> Conn:
        """A new connection; :class:`HttpConnectionError` naming the address when there is none."""
        raise NotImplementedError

    def within(self, seconds: float | None) -> AbstractAsyncContextManager[object]:
        """What runs inside ends with ``TimeoutError`` once ``seconds`` pass (None: no bound)."""
        raise NotImplementedError

    async def _settle(self) -> None:
        """After ``close``: let the transport finish closing."""

    # -- shared -----------------------------------------------------------------------------------

    def _where(self) -> str:
        return self.endpoint.where()

    async def _connection(self) -> tuple[Conn, bool]:
        if self.closed:
            raise HttpConnectionError("the client is closed")
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable():
                return conn, True
            conn.abort()
        return await self._connect(), False

    def _release(self, conn: Conn, headers: dict[str, str]) -> None:
        self._busy.discard(conn)
        keep = "close" not in headers.get("connection", "").lower()
        if keep and not self.closed and len(self._idle) < IDLE_KEPT:
            self._idle.append(conn)
        else:
            conn.abort()

    def _drop(self, conn: Conn) -> None:
        self._busy.discard(conn)
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
    ) -> tuple[Conn, int, str, dict[str, str]]:
        """Send the request; the connection it went on and the answer's status and headers."""
        request = self._request_bytes(method, target, body, headers)
        while True:
            conn, reused = await self._connection()
            self._busy.add(conn)
            try:
                status, reason, got = await self._head(conn, request)
            except Unanswered:
                self._drop(conn)
                if reused and method in IDEMPOTENT:
                    continue  # a kept connection the server had closed: once more on a fresh one
                raise
            except BaseException:
                self._drop(conn)
                raise
            return conn, status, reason, got

    @staticmethod
    async def _head(conn: Conn, request: bytes) -> tuple[int, str, dict[str, str]]:
        try:
            await conn.send(request)
            line = await conn.readline()
        except READ_ERRORS as exc:
            raise Unanswered(f"the server closed the connection: {exc}") from exc
        if not line:
            raise Unanswered("the server closed the connection before answering")
        try:
            version, status, *reason = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
            headers: dict[str, str] = {}
            while (raw := await conn.readline()) not in (b"\r\n", b"\n"):
                if not raw:
                    raise EOFError("the headers were cut short")
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            return int(status), reason[0] if reason else "", headers
        except READ_ERRORS as exc:
            raise HttpPayloadError(f"unreadable answer: {exc!r}") from exc

    @staticmethod
    async def _chunks(conn: Conn, headers: dict[str, str]) -> AsyncIterator[bytes]:
        """The answer's body as it arrives (an empty chunk never)."""
        try:
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size = int((await conn.readline()).split(b";", 1)[0], 16)
                    if size == 0:
                        while (trailer := await conn.readline()) not in (b"\r\n", b"\n"):
                            if not trailer:
                                raise EOFError("the trailers were cut short")
                        return
                    yield await conn.readexactly(size)
                    await conn.readexactly(2)
            elif "content-length" in headers:
                left = int(headers["content-length"])
                while left > 0:
                    data = await conn.read(min(left, 1 << 16))
                    if not data:
                        raise EOFError(f"{left} bytes of the body did not come")
                    left -= len(data)
                    yield data
            else:
                headers["connection"] = "close"  # the body ends with the connection
                while data := await conn.read(1 << 16):
                    yield data
        except READ_ERRORS as exc:
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
        async with self.within(timeout):
            conn, status, reason, got = await self._start(method, target, body, headers)
            try:
                data = b"".join([chunk async for chunk in self._chunks(conn, got)])
            except BaseException:
                self._drop(conn)
                raise
        self._release(conn, got)
        return Response(status, reason, got, data)

    async def stream(
        self, method: str, target: str, *, read_timeout: float, headers: dict[str, str] | None = None
    ) -> AsyncGenerator[Response | bytes, None]:
        """The answer's head (a Response with an empty body), then its body's chunks as they come;
        :class:`HttpReadTimeout` when none comes for ``read_timeout`` seconds."""
        try:
            async with self.within(read_timeout):
                conn, status, reason, got = await self._start(method, target, None, headers)
        except TimeoutError as exc:
            raise HttpReadTimeout(f"no answer within {read_timeout:g}s") from exc
        try:
            yield Response(status, reason, got, b"")
            chunks = self._chunks(conn, got)
            while True:
                try:
                    async with self.within(read_timeout):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise HttpReadTimeout(f"nothing came for {read_timeout:g}s") from exc
                yield chunk
        finally:
            # Read to its end or not, a stream's connection is not worth keeping.
            self._drop(conn)

    async def close(self) -> None:
        """Close every connection; requests still under way fail."""
        self.closed = True
        for conn in [*self._idle, *self._busy]:
            conn.abort()
        self._idle.clear()
        self._busy.clear()
        await self._settle()
