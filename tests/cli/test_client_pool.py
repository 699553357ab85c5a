"""The admin API client follows many long-polls at once and still gets other answers."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer

from pitrix.cli.client import ApiClient

HELD = 110  # past aiohttp's default pool of 100 connections


async def test_requests_go_through_beside_many_held_waits() -> None:
    release = asyncio.Event()
    held = 0
    all_held = asyncio.Event()

    async def wait(_request: web.Request) -> web.Response:
        nonlocal held
        held += 1
        if held == HELD:
            all_held.set()
        await release.wait()
        return web.json_response({"state": "active"})

    async def ping(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/wait", wait)
    app.router.add_get("/ping", ping)
    async with (
        TestServer(app, host="127.0.0.1") as server,
        ApiClient(str(server.make_url("")).rstrip("/")) as client,
    ):
        waits = [asyncio.create_task(client.get("/wait")) for _ in range(HELD)]
        try:
            async with asyncio.timeout(60):
                await all_held.wait()  # every wait holds its own connection now
            async with asyncio.timeout(10):
                assert await client.get("/ping") == {"ok": True}
        finally:
            release.set()
            answers = await asyncio.gather(*waits)
        assert answers == [{"state": "active"}] * HELD
