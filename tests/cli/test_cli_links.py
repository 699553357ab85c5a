"""Deleting a cluster another one links to: a 409 naming the linking clusters, CLI exit code 5."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from cli_helpers import ADMIN, ALICE, Run

APP = {"name": "demo", "version": "1.0", "roles": [{"name": "web", "count": 1, "image": "demo"}]}


class GatedCloud:
    """A QingCloud endpoint that refuses every call (a ret_code no client retries), or, once held,
    answers none until released. Creates on it fail at once; a delete started while it is held
    stays ``deleting`` for as long as the test needs, however slow the host (a refused delete
    would fail its job and make its cluster a linker again)."""

    def __init__(self) -> None:
        self.held = False
        self.released = asyncio.Event()

    async def answer(self, _request: web.Request) -> web.Response:
        if self.held:
            await self.released.wait()
        return web.json_response({"ret_code": 1400, "message": "refused by the test's cloud"})


@asynccontextmanager
async def gated_cloud() -> AsyncIterator[tuple[GatedCloud, str]]:
    """A running GatedCloud on 127.0.0.1 and its endpoint URL."""
    cloud = GatedCloud()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", cloud.answer)
    async with TestServer(app, host="127.0.0.1") as server:
        try:
            yield cloud, str(server.make_url("")).rstrip("/")
        finally:
            cloud.released.set()  # held calls answer, so the server closes at once


async def _create(http: aiohttp.ClientSession, links: dict[str, str] | None = None) -> str:
    """A cluster on the gated runtime (its create job will fail)."""
    body: dict[str, Any] = {"runtime": "gated", "app": APP, "links": links or {}}
    async with http.post("/v1/clusters", json=body) as response:
        assert response.status == 202, await response.text()
        return str((await response.json())["cluster"]["id"])


async def _failed(http: aiohttp.ClientSession, cid: str) -> None:
    """Until the cluster's create job has failed (a failed cluster may be deleted)."""
    async with http.get(f"/v1/clusters/{cid}/wait", params={"timeout": "120"}) as response:
        assert response.status == 200 and (await response.json())["state"] == "failed"


async def _state(http: aiohttp.ClientSession, cid: str) -> str:
    async with http.get(f"/v1/clusters/{cid}") as response:
        assert response.status == 200
        return str((await response.json())["state"])


async def test_a_linked_to_cluster_is_deleted_only_after_its_linkers(
    cli: Run, server: str, tmp_path: Path
) -> None:
    async with gated_cloud() as (cloud, endpoint):
        await _linked_to_cluster_is_deleted_last(cli, server, tmp_path, cloud, endpoint)


async def _linked_to_cluster_is_deleted_last(
    cli: Run, server: str, tmp_path: Path, cloud: GatedCloud, endpoint: str
) -> None:
    runtime = {
        "name": "gated",
        "provider": "qingcloud",
        "endpoint": endpoint,
        "zone": "z1",
        "access_key_id": "AK",
        "secret_access_key": "SK",
    }
    async with (
        aiohttp.ClientSession(server, headers={"Authorization": f"Bearer {ADMIN}"}) as admin,
        admin.post("/v1/runtimes", json=runtime) as response,
    ):
        assert response.status in (200, 201), await response.text()
    async with aiohttp.ClientSession(server, headers={"Authorization": f"Bearer {ALICE}"}) as http:
        target = await _create(http)
        first = await _create(http, {"peer": target})
        spec = tmp_path / "app.json"
        spec.write_text(json.dumps(APP))
        code, out, err = await cli(
            "-o", "json", "clusters", "create", "--runtime", "gated", "-f", str(spec),
            "--link", f"db={target}", "--link", f"cache={target}", "--no-wait",
        )  # fmt: skip
        assert code == 0, err
        second = json.loads(out)["cluster_id"]
        code, _, err = await cli("clusters", "create", "--runtime", "gated", "-f", str(spec), "--link", "db")
        assert code != 0 and "--link takes NAME=CLUSTER, got 'db'" in err, err
        await asyncio.gather(*(_failed(http, cid) for cid in (target, first, second)))
        # Links after create: the CLI asks for them (a failed cluster refuses), NAME= removes one.
        code, _, err = await cli("clusters", "links", first, "peer")
        assert code != 0 and "links takes NAME=CLUSTER_ID, got 'peer'" in err, err
        code, _, err = await cli("clusters", "links", first, "peer=", "--no-wait")
        assert code == 5 and "failed" in err, err
        async with http.delete(f"/v1/clusters/{target}") as response:
            assert response.status == 409
            error = (await response.json())["error"]
        assert error["code"] == "conflict"
        message = error["message"]
        assert message.startswith(f"cluster {target} is linked to by "), message
        for named in (f"{first} (links.peer)", f"{second} (links.cache)", f"{second} (links.db)"):
            assert named in message, message
        assert await _state(http, target) == "failed"  # refused: nothing changed

        cloud.held = True  # the deletes below stay in progress until the test ends
        code, _, err = await cli("clusters", "delete", target, "--no-wait")
        assert code == 5 and first in err and second in err, err
        code, _, err = await cli("clusters", "delete", first, "--no-wait")
        assert code == 0, err
        code, _, err = await cli("clusters", "delete", target, "--no-wait")
        assert code == 5 and first not in err and second in err, err  # a linker being deleted is gone
        code, _, err = await cli("clusters", "delete", second, "--no-wait")
        assert code == 0, err
        code, _, err = await cli("clusters", "delete", target, "--no-wait")
        assert code == 0, err
        assert await _state(http, target) in ("deleting", "deleted", "failed")
