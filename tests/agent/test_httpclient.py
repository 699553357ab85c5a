"""The agent's HTTP client against a real TCP server whose every misbehaviour is scripted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pitrix.agent.httpclient import HttpClient, HTTPConnectionClosed, HTTPProtocolError

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Metad-Version: 7\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
)
CLOSING = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

# What the server does with the n-th request on a connection (0-based): bytes to answer, None to
# hang up without a word, "hold" to answer OK only once the test sets the event it finds in `held`.
Script = Callable[[int, bytes], bytes | str | None]


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.held: asyncio.Queue[asyncio.Event] = asyncio.Queue()
        self.live: set[asyncio.StreamWriter] = set()  # connections open now
        self.changed = asyncio.Condition()  # notified when `live` changes
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        async with self.changed:
            self.live.add(writer)
            self.changed.notify_all()
        nth = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.script(nth, request)
                nth += 1
                if answer is None:
                    break
                if answer == "hold":
                    release = asyncio.Event()
                    await self.held.put(release)
                    await release.wait()
                    answer = OK
                assert isinstance(answer, bytes)
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            async with self.changed:
                self.live.discard(writer)
                self.changed.notify_all()

    async def open_connections(self, count: int) -> None:
        """Until exactly ``count`` connections are open (the client closed the ones it does not keep)."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.live) == count), 5)

    @property
    def base(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


Serve = Callable[[Script], Awaitable[ScriptedServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[ScriptedServer] = []

    async def start(script: Script) -> ScriptedServer:
        server = ScriptedServer(script)
        server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.server is not None
        server.server.close()


async def test_keeps_the_connection_alive_and_reads_chunked_bodies(serve: Serve) -> None:
    server = await serve(lambda nth, request: CHUNKED)
    client = HttpClient(local_address="127.0.0.1")
    try:
        for _ in range(3):
            response = await client.request("GET", server.base, "/self?wait=true", timeout=5)
            assert (response.status, response.body) == (200, b"abcde")
            assert response.headers["x-metad-version"] == "7"
        put = await client.request("PUT", server.base, "/self/status/applied", body=b"{}", timeout=5)
        assert put.status == 200
    finally:
        await client.close()
    assert server.connections == 1 and client.connections_made == 1
    assert server.requests[0].startswith(b"GET /self?wait=true HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 2\r\n\r\n{}" in server.requests[3]


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_an_idempotent_request_on_a_connection_the_server_dropped_goes_again(
    serve: Serve, method: str
) -> None:
    # The first request is answered; the second, on the kept connection, is met with a hang-up
    # (a metad restarting); a fresh connection answers it.
    server = await serve(lambda nth, request: OK if nth == 0 else None)
    client = HttpClient()
    try:
        assert (await client.request(method, server.base, "/a", timeout=5)).body == b"ok"
        assert (await client.request(method, server.base, "/b", timeout=5)).body == b"ok"
    finally:
        await client.close()
    assert client.connections_made == 2


async def test_a_post_on_a_dropped_connection_is_not_sent_twice(serve: Serve) -> None:
    server = await serve(lambda nth, request: OK if nth == 0 else None)
    client = HttpClient()
    try:
        await client.request("POST", server.base, "/self/cert", body=b"{}", timeout=5)
        with pytest.raises(HTTPConnectionClosed):
            await client.request("POST", server.base, "/self/cert", body=b"{}", timeout=5)
    finally:
        await client.close()
    assert len(server.requests) == 2


async def test_a_timed_out_connection_is_never_used_again(serve: Serve) -> None:
    server = await serve(lambda nth, request: "hold" if b"/slow" in request else OK)
    client = HttpClient()
    try:
        with pytest.raises(TimeoutError):
            await client.request("GET", server.base, "/slow", timeout=0.2)
        assert (await client.request("GET", server.base, "/fast", timeout=5)).body == b"ok"
    finally:
        await client.close()
    assert client.connections_made == 2


async def test_connection_close_answers_and_garbage(serve: Serve) -> None:
    closing = await serve(lambda nth, request: CLOSING)
    garbage = await serve(lambda nth, request: b"SPDY/9 what\r\n\r\n")
    client = HttpClient()
    try:
        for _ in range(2):
            assert (await client.request("GET", closing.base, "/", timeout=5)).body == b"ok"
        assert closing.connections == 2
        with pytest.raises(HTTPProtocolError):
            await client.request("GET", garbage.base, "/", timeout=5)
    finally:
        await client.close()


async def test_refused_and_malformed_bases_are_clear_errors() -> None:
    client = HttpClient()
    try:
        with pytest.raises(OSError):
            await client.request("GET", "http://127.0.0.1:1", "/", timeout=5)
        with pytest.raises(ValueError, match="not an http"):
            await client.request("GET", "ftp://127.0.0.1", "/", timeout=5)
    finally:
        await client.close()


def hold_waits(nth: int, request: bytes) -> bytes | str:
    return "hold" if request.startswith(b"GET /wait ") else OK


async def test_overlapping_requests_leave_two_idle_connections_behind(serve: Serve) -> None:
    # Three requests in flight at once need three connections (an agent starting: its first reads
    # and its heartbeat); once answered, the client keeps two and closes the third, which metad
    # would otherwise hold for as long as the agent lives.
    server = await serve(hold_waits)
    client = HttpClient()
    try:
        waits = [
            asyncio.ensure_future(client.request("GET", server.base, "/wait", timeout=5)) for _ in range(3)
        ]
        for _ in range(3):
            (await asyncio.wait_for(server.held.get(), 5)).set()
        assert [(await w).body for w in waits] == [b"ok"] * 3
        assert client.connections_made == 3
        await server.open_connections(2)
    finally:
        await client.close()


async def test_a_long_poll_beside_reports_connects_no_more_after_the_first_round(serve: Serve) -> None:
    # An agent's round: the long-poll for the next change is in flight while the round's applied
    # report goes; then the long-poll is answered. Keeping fewer than two connections would
    # connect anew (a TLS handshake with metad) every round.
    server = await serve(hold_waits)
    client = HttpClient()
    try:
        for _ in range(5):
            poll = asyncio.ensure_future(client.request("GET", server.base, "/wait", timeout=5))
            release = await asyncio.wait_for(server.held.get(), 5)
            put = await client.request("PUT", server.base, "/self/status/applied", body=b"{}", timeout=5)
            assert put.body == b"ok"
            release.set()
            assert (await poll).body == b"ok"
        assert client.connections_made == 2
        await server.open_connections(2)
    finally:
        await client.close()
