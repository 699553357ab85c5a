"""The CLI's own HTTP client: unix sockets, JSON errors, event streams, and each way a server fails."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from pitrix.cli.client import ApiClient, ApiError
from pitrix.cli.http import HttpClient, HttpConnectionError, HttpPayloadError, HttpReadTimeout, Response

RELEASE = web.AppKey("release", asyncio.Event)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _echo(request: web.Request) -> web.Response:
    if request.query.get("fail"):
        return web.json_response(
            {"error": {"code": "bad_request", "message": "no good", "field": "spec.name"}}, status=400
        )
    body = await request.json() if request.can_read_body else None
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "auth": request.headers.get("Authorization"),
            "body": body,
        }
    )


async def _events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b'event: cluster\ndata: {"id": "cl-1"}\n\n: keepalive\n\nevent: re')
    await response.write(b"ady\ndata:\n\n")
    if request.query.get("hang"):
        await request.app[RELEASE].wait()
    return response


async def test_over_a_unix_socket_with_token_query_body_and_errors(tmp_path: Path) -> None:
    app = web.Application()
    app.router.add_route("*", "/v1/{tail:.*}", _echo)
    app.router.add_get("/events", _events)
    runner = web.AppRunner(app)
    await runner.setup()
    path = tmp_path / "api.sock"
    await web.UnixSite(runner, str(path)).start()
    try:
        async with ApiClient(f"unix:{path}", "tok") as api:
            got = await api.get("/v1/clusters/a b", all=1, skip=None)
            assert got == {
                "method": "GET",
                "path": "/v1/clusters/a b",
                "query": {"all": "1"},
                "auth": "Bearer tok",
                "body": None,
            }
            assert (await api.post("/v1/x", {"n": [1]}))["body"] == {"n": [1]}
            assert (await api.put("/v1/x", {"n": 2}))["method"] == "PUT"
            assert (await api.request("DELETE", "/v1/x", wait_up_to=5))["method"] == "DELETE"
            with pytest.raises(ApiError) as caught:
                await api.get("/v1/x", fail=1)
            assert (caught.value.status, caught.value.code, str(caught.value), caught.value.field) == (
                400,
                "bad_request",
                "no good",
                "spec.name",
            )
            with pytest.raises(ApiError) as missing:
                await api.get("/nowhere")
            assert (missing.value.status, missing.value.code) == (404, "error")
            assert [e async for e in api.events("/events")] == [("cluster", {"id": "cl-1"}), ("ready", {})]
            with pytest.raises(ApiError):
                [e async for e in api.events("/nowhere")]
    finally:
        await runner.cleanup()


async def test_a_silent_stream_times_out_as_a_lost_connection() -> None:
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/events", _events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = HttpClient(f"http://127.0.0.1:{port}")
    try:
        stream = client.stream("GET", "/events?hang=1", read_timeout=0.5)
        head = await anext(stream)
        assert isinstance(head, Response) and head.status == 200
        with pytest.raises(HttpReadTimeout):
            async for _chunk in stream:
                pass
        assert issubclass(HttpReadTimeout, HttpConnectionError)
    finally:
        app[RELEASE].set()
        await client.close()
        await runner.cleanup()


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def test_a_kept_connection_the_server_closed_is_replaced_for_a_get() -> None:
    connections = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        await reader.read(65536)  # the next request is read, then the connection is dropped unanswered
        writer.transport.abort()

    server, url = await _serve(once)
    async with server, ApiClient(url) as api:
        assert await api.get("/a") == {}
        assert await api.get("/b") == {}  # sent again on a fresh connection
        assert connections >= 2


async def test_refused_dropped_and_cut_short_raise_the_clients_own_errors() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        refused = probe.getsockname()[1]
    async with ApiClient(f"http://127.0.0.1:{refused}") as api:
        with pytest.raises(HttpConnectionError):
            await api.get("/x")

    async def dropped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.transport.abort()

    server, url = await _serve(dropped)
    async with server, ApiClient(url) as api:
        with pytest.raises(HttpConnectionError):
            await api.post("/x", {"a": 1})  # a first connection: not sent twice

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + json.dumps({"a": 1}).encode())
        await writer.drain()
        writer.transport.abort()

    server, url = await _serve(cut)
    async with server, ApiClient(url) as api:
        with pytest.raises(HttpPayloadError):
            await api.get("/x")

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    server, url = await _serve(chunked)
    async with server, ApiClient(url) as api:
        assert await api.get("/x") == [1, 2]


async def test_a_timeout_is_per_request() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await reader.read()

    server, url = await _serve(slow)
    async with server, ApiClient(url, timeout=60) as api:
        with pytest.raises(TimeoutError):
            await api.request("GET", "/x", wait_up_to=0.3)
