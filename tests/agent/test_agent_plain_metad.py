"""pitrix-agent against a metad without pitrix's extensions (Go metad, AppCenter's).

Go metad cannot be built in CI, so a small server here answers as it does (recorded in
tests/metad/metad_answers.json): a long-poll's ``X-Metad-Version`` is the version from before the
wait, and there is no ``/self/status`` (its router has no PUT: "404 page not found"). This one
keeps its version still for good, so an agent that trusted versions alone would take the change
for "no change" and wait on: the change reaches the file only when values are compared.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import port_resource, running
from aiohttp import web

from pitrix.agent.agent import build_agent
from pitrix.agent.config import Overrides, load_config
from pitrix.agent.report import MetadReporter

LISTEN_IP = "127.108.29.1"
VM_IP = "127.108.29.2"
VERSION = "7"  # never moves: the staleness at its worst


class PlainMetad:
    """``GET /self/...`` with long-polls, answered as Go metad answers a mapped caller."""

    def __init__(self) -> None:
        self.view: dict[str, Any] = {"host": {"ip": VM_IP, "instance_id": "i-1"}, "env": {"port": "80"}}
        self.changed = asyncio.Event()
        self.writes: list[str] = []

    def change(self, section: str, key: str, value: str) -> None:
        self.view[section][key] = value
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def _lookup(self, path: str) -> Any:
        node: Any = {"self": self.view}
        for part in path.strip("/").split("/"):
            if not part:
                continue
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    async def get(self, request: web.Request) -> web.Response:
        if request.query.get("wait") == "true":
            await self.changed.wait()
        value = self._lookup(request.path)
        headers = {"X-Metad-Version": VERSION}
        if value is None:
            body = json.dumps({"code": 404, "message": "Not found", "type": "ERROR"}) + "\n"
            return web.Response(text=body, status=404, headers=headers)
        return web.json_response(value, headers=headers)

    async def put(self, request: web.Request) -> web.Response:
        self.writes.append(request.path)
        return web.Response(text="404 page not found\n", status=404)


@pytest.fixture
async def plain_metad() -> AsyncIterator[tuple[PlainMetad, str]]:
    server = PlainMetad()
    app = web.Application()
    app.router.add_get("/{path:.*}", server.get)
    app.router.add_put("/{path:.*}", server.put)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, LISTEN_IP, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield server, f"http://{LISTEN_IP}:{port}"
    finally:
        server.change("env", "_stop", "1")  # releases held polls
        await runner.cleanup()


async def test_a_stale_version_with_new_values_is_a_change_and_reports_stop_at_the_first_404(
    plain_metad: tuple[PlainMetad, str], tmp_path: Path
) -> None:
    server, url = plain_metad
    root = tmp_path / "vm"
    dest = port_resource(root)
    config = load_config(
        root, None, Overrides(backend="metad", nodes=[url], watch=True), environ={"PITRIX_VM_IP": VM_IP}
    )
    config.heartbeat_interval = 0.05
    agent = build_agent(config, announce=lambda _i: None)
    assert isinstance(agent.reporter, MetadReporter)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 10)
        assert dest.read_text() == "listen 80\n"
        server.change("env", "port", "81")
        # The answer to the held poll carries the version the agent sent: its values tell.
        await asyncio.wait_for(agent.wait_until(lambda: dest.read_text() == "listen 81\n"), 10)
        server.change("env", "port", "82")
        await asyncio.wait_for(agent.wait_until(lambda: dest.read_text() == "listen 82\n"), 10)
        # Three rounds' applied reports and the heartbeats: one request found no status API,
        # and nothing was sent after it.
        assert agent.reporter.off
        assert len(server.writes) == 1 and server.writes[0].startswith("/self/status/")
