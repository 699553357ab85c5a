"""What a browser could forge is refused: foreign Host names (DNS rebinding), cross-site Origins,
non-JSON writes; a token in the URL only where documented; bodies bounded in size and depth.

The API here is the README's default set-up: no tokens, so every request is an admin. That is the
set-up a hostile web page aims at, and the one where each of these checks is the only lock.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from api_helpers import ALICE, APP, DEAD_CLOUD, bearer, error_of, next_event

from pitrix.api.app import create_app
from pitrix.api.errors import MAX_DEPTH
from pitrix.runtime.service import RuntimeService
from pitrix.settings import ApiSettings

Client = TestClient[Any, Any]


async def serve(service: RuntimeService, settings: ApiSettings | None = None) -> Client:
    client: Client = TestClient(TestServer(create_app(service, None, settings), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def open_api(service: RuntimeService) -> AsyncIterator[Client]:
    client = await serve(service)
    try:
        yield client
    finally:
        await client.close()


async def runtimes(api: Client) -> list[str]:
    return [r["name"] for r in (await (await api.get("/v1/runtimes")).json())["runtimes"]]


# -- Host ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9610", "localhost.evil.example", "10.1.2.3"])
async def test_a_foreign_host_name_is_refused(open_api: Client, host: str) -> None:
    response = await open_api.get("/v1/runtimes", headers={"Host": host})
    error = await error_of(response, 421)
    assert error["field"] == "Host" and "api.allowed_hosts" in error["message"]
    response = await open_api.post("/v1/runtimes", json=DEAD_CLOUD, headers={"Host": host})
    await error_of(response, 421)
    assert await runtimes(open_api) == []


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:9610", "127.0.0.1", "127.0.0.1:1", "[::1]:9610"])
async def test_loopback_names_and_addresses_are_answered(open_api: Client, host: str) -> None:
    assert (await open_api.get("/v1/runtimes", headers={"Host": host})).status == 200


async def test_configured_hosts_and_the_listen_address_are_answered(service: RuntimeService) -> None:
    settings = ApiSettings(listen="192.0.2.7:9610", auth="tokens", allowed_hosts=["Pitrix.Internal"])
    api = await serve(service, settings)
    try:
        for host in ("pitrix.internal:9610", "192.0.2.7", "localhost"):
            assert (await api.get("/healthz", headers={"Host": host})).status == 200, host
        await error_of(await api.get("/healthz", headers={"Host": "other.internal"}), 421)
    finally:
        await api.close()


@pytest.mark.parametrize("bad", ["https://x.example", "x.example:80", "x.example/", "*"])
def test_allowed_hosts_must_be_bare_names(bad: str) -> None:
    with pytest.raises(ValueError, match="allowed_hosts"):
        ApiSettings(allowed_hosts=[bad])


# -- Origin ----------------------------------------------------------------------------------------


async def test_a_cross_site_text_plain_post_creates_nothing(open_api: Client) -> None:
    """The probe's forgery: a page elsewhere posts the runtime as text/plain (no preflight)."""
    headers = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    response = await open_api.post("/v1/runtimes", data=json.dumps(DEAD_CLOUD), headers=headers)
    error = await error_of(response, 403)
    assert error["field"] == "Origin"
    assert await runtimes(open_api) == []


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://localhost", "https://127.0.0.1", "http://127.0.0.1:1", "file://"],
)
async def test_cross_origin_writes_and_streams_are_refused(open_api: Client, origin: str) -> None:
    response = await open_api.post("/v1/runtimes", json=DEAD_CLOUD, headers={"Origin": origin})
    assert (await error_of(response, 403))["field"] == "Origin"
    await error_of(await open_api.get("/v1/events", headers={"Origin": origin}), 403)
    assert await runtimes(open_api) == []


async def test_same_origin_and_configured_origins_may_write(service: RuntimeService) -> None:
    api = await serve(service, ApiSettings(allowed_origins=["https://ops.example:8443"]))
    try:
        own = f"http://127.0.0.1:{api.port}"
        response = await api.post("/v1/runtimes", json=DEAD_CLOUD, headers={"Origin": own})
        assert response.status == 201, await response.text()
        again = {**DEAD_CLOUD, "name": "dead2"}
        response = await api.post("/v1/runtimes", json=again, headers={"Origin": "https://OPS.example:8443"})
        assert response.status == 201, await response.text()
        stream = await api.get("/v1/events", headers={"Origin": own})
        assert stream.status == 200
        await next_event(stream)
        stream.close()
    finally:
        await api.close()


@pytest.mark.parametrize("bad", ["ops.example", "https://ops.example/", "ftp://ops.example", "https://"])
def test_allowed_origins_must_be_origins(bad: str) -> None:
    with pytest.raises(ValueError, match="allowed_origins"):
        ApiSettings(allowed_origins=[bad])


# -- JSON-only writes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_writes_must_be_json(open_api: Client, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps(DEAD_CLOUD).encode()
    response = await open_api.post(
        "/v1/runtimes", data=body, headers=headers, skip_auto_headers=["Content-Type"]
    )
    error = await error_of(response, 415)
    assert error["field"] == "Content-Type" and "application/json" in error["message"]
    assert await runtimes(open_api) == []


async def test_json_with_a_charset_and_bodiless_actions_pass(open_api: Client) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    response = await open_api.post("/v1/runtimes", data=json.dumps(DEAD_CLOUD), headers=headers)
    assert response.status == 201, await response.text()
    # An action without a body (as the CLI sends it) reaches its handler: 404 for an unknown cluster.
    await error_of(await open_api.post("/v1/clusters/cl-nope/retry"), 404)
    await error_of(await open_api.delete("/v1/clusters/cl-nope"), 404)


# -- ?access_token= --------------------------------------------------------------------------------


async def test_access_token_only_on_streams_and_the_page(api: Client) -> None:
    for path in ("/v1/clusters", "/v1/runtimes", "/v1/apps", "/healthz"):
        error = await error_of(await api.get(f"{path}?access_token={ALICE}"), 400)
        assert error["field"] == "access_token", path
    response = await api.post(f"/v1/apps?access_token={ALICE}", json=APP)
    assert (await error_of(response, 400))["field"] == "access_token"
    assert (await api.get(f"/ui?access_token={ALICE}")).status == 200
    stream = await api.get(f"/v1/events?access_token={ALICE}")
    assert stream.status == 200
    assert (await next_event(stream))[0] == "ready"
    stream.close()
    # The header keeps working everywhere.
    assert (await api.get("/v1/clusters", headers=bearer(ALICE))).status == 200


# -- bounded bodies --------------------------------------------------------------------------------


def big_app(size: int) -> dict[str, Any]:
    return {**APP, "description": "x" * size}


async def test_a_large_app_spec_is_413_naming_the_limit(open_api: Client) -> None:
    """The probe's 7.5 MB spec was a 503 'try again' (etcd refused the write): now a 413."""
    response = await open_api.post("/v1/apps", json=big_app(7_500_000))
    error = await error_of(response, 413)
    assert error["field"] == "body" and str(1024 * 1024) in error["message"]
    assert "api.max_body_bytes" in error["message"]
    await error_of(await open_api.get("/v1/apps/demo"), 404)


async def test_a_spec_just_under_the_limit_is_stored_and_deployable(open_api: Client) -> None:
    """Whatever the limit lets in, etcd takes: registering it and creating a cluster from it."""
    spec = big_app(1024 * 1024 - 1024)
    assert (await open_api.post("/v1/apps", json=spec)).status == 201
    assert (await open_api.post("/v1/runtimes", json=DEAD_CLOUD)).status == 201
    for app in (spec, "demo"):
        response = await open_api.post("/v1/clusters", json={"runtime": "dead", "app": app})
        assert response.status == 202, await response.text()
        cid = (await response.json())["cluster"]["id"]
        # Its create job journals the spec-bearing cluster record as it goes: every write fits.
        shown = await open_api.get(f"/v1/clusters/{cid}/wait?timeout=60")
        assert (await shown.json())["state"] == "failed"  # the dead cloud, not the store
        assert "too large" not in json.dumps(await shown.json())


async def test_a_chunked_body_over_the_limit_is_413(open_api: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "x", "description": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    response = await open_api.post("/v1/apps", data=chunks(), headers={"Content-Type": "application/json"})
    assert (await error_of(response, 413))["field"] == "body"


async def test_what_etcd_would_refuse_is_413_even_under_a_raised_limit(service: RuntimeService) -> None:
    api = await serve(service, ApiSettings(max_body_bytes=8 * 1024 * 1024))
    try:
        # Over etcd's --max-request-bytes (1.5 MiB), and over its gateway's message limit (2 MiB).
        for size in (1_800_000, 3 * 1024 * 1024):
            response = await api.post("/v1/apps", json=big_app(size))
            assert (await error_of(response, 413))["field"] == "body"
    finally:
        await api.close()


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


JSON_WRITES = [
    ("/v1/apps", b'{"name": "demo", "roles": %s}'),
    ("/v1/runtimes", b'{"name": "x", "provider": "qingcloud", "extra": %s}'),
    ("/v1/clusters", b'{"runtime": "dead", "app": %s}'),
    ("/v1/clusters/cl-nope/scale", b'{"role": "web", "count": %s}'),
    ("/v1/clusters/cl-nope/env", b'{"env": %s}'),
    ("/v1/clusters/cl-nope/recover", b'{"nodes": %s}'),
]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 100_000])
@pytest.mark.parametrize(("path", "template"), JSON_WRITES)
async def test_deeply_nested_json_is_400_everywhere(
    open_api: Client, path: str, template: bytes, depth: int
) -> None:
    body = template % nested(depth)
    headers = {"Content-Type": "application/json"}
    error = await error_of(await open_api.post(path, data=body, headers=headers), 400)
    assert error["field"] == "body" and "nested" in error["message"]


async def test_nesting_within_the_limit_is_read(open_api: Client) -> None:
    env = {"web": {"DEEP": "x"}}
    body = {"runtime": "dead", "app": APP, "labels": json.loads(nested(MAX_DEPTH - 2)), "env": env}
    # Depth is fine; what is wrong is reported as usual (no such runtime).
    response = await open_api.post("/v1/clusters", json=body)
    assert response.status in (400, 404), await response.text()
    assert "nested" not in (await response.json())["error"]["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_an_empty_form_post_is_refused(open_api: Client, content_type: str) -> None:
    """A form with no fields still posts cross-site; older browsers send no Origin with it."""
    response = await open_api.post(
        "/v1/clusters/cl-nope/retry", data=b"", headers={"Content-Type": content_type}
    )
    assert (await error_of(response, 415))["field"] == "Content-Type"


# -- the real pitrixd, as the README starts it (no tokens) -------------------------------------------


async def test_pitrixd_refuses_the_probes_forgeries(etcd_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_")}
    env.update(
        PITRIX_ETCD__PREFIX=f"/guard-{secrets.token_hex(4)}", PITRIX_API__ALLOWED_HOSTS='["pitrix.internal"]'
    )
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "pitrixd"),
        "--state-dir", str(tmp_path / "state"), "--api-listen", "127.0.0.1:0", "--etcd", etcd_url,
        stdout=asyncio.subprocess.PIPE, stderr=(tmp_path / "pitrixd.log").open("wb"), env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line, (tmp_path / "pitrixd.log").read_text()
        url = json.loads(line)["url"]
        async with aiohttp.ClientSession(url) as http:
            forged = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
            async with http.post("/v1/runtimes", data=json.dumps(DEAD_CLOUD), headers=forged) as response:
                assert response.status == 403, await response.text()
            async with http.get("/v1/runtimes", headers={"Host": "evil.example"}) as response:
                assert response.status == 421, await response.text()
            async with http.get("/v1/runtimes", headers={"Host": "pitrix.internal:9610"}) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["runtimes"] == []
            async with http.post("/v1/apps", json=big_app(7_500_000)) as response:
                assert response.status == 413, await response.text()
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
