"""The CLI's blocking HTTP client, and the runner for a command that needs no event loop.

A command typed at a prompt sends its requests one after another: ``import asyncio`` (ssl,
concurrent.futures, logging come with it) was more than half of what ``pitrix clusters list``
cost above a bare Python. This transport does the same exchange (pitrix/cli/httpcore.py: same
address forms, TLS context, request bytes, framing, keep-alive and retry) over plain sockets, so
the command's handlers, the API client and its errors are one code for both transports.

Not http.client: it imports ssl and the email package on every use (about as much as the whole
start-up budget), and would frame answers its own way where the core already does.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from pitrix.cli.httpcore import LINE_LIMIT, Conn, HttpConnectionError, HttpCore

if TYPE_CHECKING:
    from types import TracebackType

T = TypeVar("T")


def run_blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end at once: it must never wait on an event loop (every await under it
    reaches only blocking connections), so one step finishes it."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise RuntimeError("a command run without an event loop waited for one")


class _Deadline:
    """``within(seconds)``: the client's deadline for what runs inside (the nearer one when nested)."""

    __slots__ = ("_client", "_outer", "_seconds")

    def __init__(self, client: BlockingHttpClient, seconds: float | None) -> None:
        self._client = client
        self._seconds = seconds
        self._outer: float | None = None

    async def __aenter__(self) -> None:
        self._outer = self._client.deadline
        if self._seconds is not None:
            mine = time.monotonic() + self._seconds
            self._client.deadline = mine if self._outer is None else min(mine, self._outer)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.deadline = self._outer


class _SocketConnection(Conn):
    __slots__ = ("_client", "_file", "_sock")

    def __init__(self, sock: socket.socket, client: BlockingHttpClient) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        self._client = client

    def _arm(self) -> None:
        self._sock.settimeout(self._client.left())

    async def send(self, data: bytes) -> None:
        self._arm()
        with _SocketFailures():
            self._sock.sendall(data)

    async def readline(self) -> bytes:
        self._arm()
        with _SocketFailures():
            line = self._file.readline(LINE_LIMIT + 1)
        if len(line) > LINE_LIMIT:
            raise ValueError(f"a line longer than {LINE_LIMIT} bytes")
        return line

    async def readexactly(self, n: int) -> bytes:
        self._arm()
        with _SocketFailures():
            data = self._file.read(n)
        if len(data) < n:
            raise EOFError(f"{n - len(data)} of {n} bytes did not come")
        return data

    async def read(self, n: int) -> bytes:
        self._arm()
        with _SocketFailures():
            return self._file.read1(n)

    def reusable(self) -> bool:
        # Idle, nothing may be readable: readable is the server's close (or bytes nobody asked for).
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def abort(self) -> None:
        self._file.close()
        self._sock.close()


class _SocketFailures:
    """A socket's failure other than a timeout (a TLS alert, a closed descriptor) as the
    ConnectionError the core reads as a broken connection; a timeout stays a TimeoutError."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
            raise ConnectionError(str(exc)) from exc


def _open_tcp(host: str, port: int, timeout: float | None) -> socket.socket:
    """socket.create_connection, but an ASCII host goes to getaddrinfo as bytes: given a str it
    loads the idna codec (and unicodedata) first, a tenth of a command's start-up."""
    error: OSError | None = None
    name = host.encode("ascii") if host.isascii() else host
    for family, kind, proto, _, address in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"{host} has no address")


class BlockingHttpClient(HttpCore):
    """Requests to one server (``http://``, ``https://`` or ``unix:/path``), each blocking until
    its answer is read: for a process that sends one request at a time."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(url, headers)
        self.deadline: float | None = None

    def left(self) -> float | None:
        """Seconds to the deadline (None: none); TimeoutError once it has passed."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("past the request's deadline")
        return left

    async def _connect(self) -> Conn:
        where = self.endpoint
        sock: socket.socket | None = None
        try:
            if where.unix is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.left())
                sock.connect(where.unix)
            else:
                sock = _open_tcp(where.host, where.port, self.left())
                if where.tls is not None:
                    sock = where.tls.wrap_socket(sock, server_hostname=where.host)
        except TimeoutError:
            if sock is not None:
                sock.close()
            raise
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise HttpConnectionError(f"cannot connect to {self._where()}: {exc}") from exc
        return _SocketConnection(sock, self)

    def within(self, seconds: float | None) -> _Deadline:
        return _Deadline(self, seconds)
