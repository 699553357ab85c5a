"""The blocking client a typed command uses: the same answers and errors as the asyncio one.

The servers run in the test's loop; the blocking client runs in a thread (it blocks), driven as
the CLI drives it, by ``run_blocking``, without an event loop of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pitrix.cli.blocking import run_blocking
from pitrix.cli.client import ApiClient, ApiError
from pitrix.cli.http import HttpConnectionError, HttpPayloadError, HttpReadTimeout

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
RELEASE = web.AppKey("release", asyncio.Event)


async def blocking(url: str, use: Callable[[ApiClient], Awaitable[Any]], token: str | None = None) -> Any:
    """``use(client)`` on a blocking ApiClient, in a thread, as the CLI runs a command."""

    async def command() -> Any:
        async with ApiClient(url, token, blocking=True) as api:
            return await use(api)

    return await asyncio.to_thread(run_blocking, command())


async def _echo(request: web.Request) -> web.StreamResponse:
    if request.path == "/events":
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'event: cluster\ndata: {"id": "cl-1"}\n\n: keepalive\n\nevent: re')
        await response.write(b"ady\ndata:\n\n")
        if request.query.get("hang"):
            await request.app[RELEASE].wait()  # a stream gone silent; the client gives up first
        return response
    if request.query.get("fail"):
        return web.json_response(
            {"error": {"code": "bad_request", "message": "no good", "field": "spec.name"}}, status=400
        )
    body = await request.json() if request.can_read_body else None
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "auth": request.headers.get("Authorization"),
            "body": body,
        }
    )


async def test_unix_socket_token_errors_and_an_event_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pitrix.cli.client.EVENTS_READ_TIMEOUT", 0.5)
    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    path = tmp_path / "api.sock"
    await web.UnixSite(runner, str(path)).start()

    async def use(api: ApiClient) -> list[Any]:
        got: list[Any] = [await api.get("/v1/clusters/a b"), await api.post("/v1/x", {"n": [1]})]
        with pytest.raises(ApiError) as caught:
            await api.get("/v1/x", fail=1)
        got.append((caught.value.status, caught.value.code, str(caught.value), caught.value.field))
        got.append([e async for e in api.events("/events")])
        with pytest.raises(HttpReadTimeout):
            [e async for e in api.events("/events?hang=1")]  # read until the stream goes silent
        return got

    try:
        got = await blocking(f"unix:{path}", use, token="tok")
    finally:
        app[RELEASE].set()
        await runner.cleanup()
    assert got[0] == {"method": "GET", "path": "/v1/clusters/a b", "auth": "Bearer tok", "body": None}
    assert got[1]["body"] == {"n": [1]}
    assert got[2] == (400, "bad_request", "no good", "spec.name")
    assert got[3] == [("cluster", {"id": "cl-1"}), ("ready", {})]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_kept_connection_retry_refusal_cut_short_chunked_and_timeout() -> None:
    connections = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")  # the next request is read, then dropped unanswered
        writer.transport.abort()

    server, url = await _serve(once)
    async with server:
        assert await blocking(url, lambda api: api.get("/a")) == {}

        async def twice(api: ApiClient) -> list[Any]:
            return [await api.get("/a"), await api.get("/b")]  # /b: once more on a fresh connection

        assert await blocking(url, twice) == [{}, {}]
        assert connections == 3

        async def post_twice(api: ApiClient) -> Any:
            await api.get("/a")
            return await api.post("/b", {"a": 1})  # not idempotent: not sent again

        with pytest.raises(HttpConnectionError):
            await blocking(url, post_twice)

    port = int(url.rsplit(":", 1)[1])  # the server is closed: refused now
    with pytest.raises(HttpConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
        await blocking(url, lambda api: api.get("/x"))

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + json.dumps({"a": 1}).encode())
        await writer.drain()
        writer.transport.abort()

    server, url = await _serve(cut)
    async with server:
        with pytest.raises(HttpPayloadError):
            await blocking(url, lambda api: api.get("/x"))

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    server, url = await _serve(chunked)
    async with server:
        assert await blocking(url, lambda api: api.get("/x")) == [1, 2]

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server, url = await _serve(slow)
    async with server:
        with pytest.raises(TimeoutError):
            await blocking(url, lambda api: api.request("GET", "/x", wait_up_to=0.3))


class _Suspends:
    def __await__(self) -> Generator[None, None, None]:
        yield  # what awaiting a future of an event loop does


def test_a_coroutine_that_waits_for_an_event_loop_is_refused() -> None:
    async def waits() -> None:
        await _Suspends()

    with pytest.raises(RuntimeError, match="without an event loop"):
        run_blocking(waits())


async def test_a_wait_pitrixd_stops_answering_ends_with_a_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`pitrix jobs wait` without --timeout whose /wait request pitrixd never answers: the request's
    own timeout ends it with one line (exit 7, the hint to follow again), where it once formatted
    the missing --timeout and died with a TypeError."""
    import argparse

    from pitrix.cli.main import EXIT_TIMEOUT, _wait_job

    held, release = asyncio.Event(), asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        held.set()
        await release.wait()  # no answer until the client gave up (its request timeout)
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v1/clusters/{cid}/wait", silent)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    args = argparse.Namespace(no_wait=False, output="json", timeout=None, url=url, following=None)
    job = {"id": "j-1", "action": "create"}

    async def command() -> int:
        async with ApiClient(url, None, timeout=0.5, blocking=True) as api:
            return await _wait_job(api, "cl-1", job, args)

    try:
        code = await asyncio.to_thread(run_blocking, command())
    finally:
        release.set()
        await runner.cleanup()
    assert held.is_set()
    err = capsys.readouterr().err
    assert code == EXIT_TIMEOUT, err
    assert err.startswith("pitrix: pitrixd did not answer in time;"), err
    assert "pitrix jobs wait cl-1 j-1" in err
