"""Bad input at pitrixd's API: malformed and hostile app specs, API bodies and oversized payloads.

Every one must be a clear 4xx (a JSON error with a code and a message), and nothing may change:
the clusters, the runtimes and the simulator's ledger read the same before and after, and pitrixd
still answers. One pitrixd and simulator serve every case of the module.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bench.stack import TRIVIAL_APP, Stack, running_stack

GOOD: dict[str, Any] = copy.deepcopy(TRIVIAL_APP)


def app(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    spec.update(changes)
    return spec


def role(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    spec["roles"][0].update(changes)
    return spec


def create(spec: Any, **extra: Any) -> bytes:
    return json.dumps({"runtime": "sim", "app": spec, "name": "bad", **extra}).encode()


# name → (method, path, raw body)
CASES: dict[str, tuple[str, str, bytes]] = {
    "not json": ("POST", "/v1/clusters", b"{runtime: sim"),
    "json array": ("POST", "/v1/clusters", b"[1, 2, 3]"),
    "not utf-8": ("POST", "/v1/clusters", b'{"runtime": "\xff\xfe"}'),
    "empty body": ("POST", "/v1/clusters", b""),
    "runtime missing": ("POST", "/v1/clusters", json.dumps({"app": GOOD}).encode()),
    "unknown runtime": ("POST", "/v1/clusters", json.dumps({"runtime": "nope", "app": GOOD}).encode()),
    "app not an object": ("POST", "/v1/clusters", create("rm -rf /")),
    "no roles": ("POST", "/v1/clusters", create(app(roles=[]))),
    "unknown spec field": ("POST", "/v1/clusters", create(app(evil={"x": 1}))),
    "app name with shell": ("POST", "/v1/clusters", create(app(name="$(reboot)"))),
    "role name traversal": ("POST", "/v1/clusters", create(role(name="../../etc"))),
    "negative count": ("POST", "/v1/clusters", create(role(count=-1))),
    "huge count": ("POST", "/v1/clusters", create(role(count=10**9))),
    "count as text": ("POST", "/v1/clusters", create(role(count="3; reboot"))),
    "cpu zero": ("POST", "/v1/clusters", create(role(cpu=0))),
    "empty service cmd": ("POST", "/v1/clusters", create(role(services={"start": {"cmd": ""}}))),
    "unknown service": ("POST", "/v1/clusters", create(role(services={"pwn": {"cmd": "true"}}))),
    "duplicate roles": ("POST", "/v1/clusters", create(app(roles=[GOOD["roles"][0]] * 2))),
    "env key hostile": ("POST", "/v1/clusters", create(role(env={"../x": "1"}))),
    "counts not an object": ("POST", "/v1/clusters", create(GOOD, counts=[3])),
    "counts negative": ("POST", "/v1/clusters", create(GOOD, counts={"node": -2})),
    "counts unknown role": ("POST", "/v1/clusters", create(GOOD, counts={"ghost": 2})),
    "deeply nested": (
        "POST",
        "/v1/clusters",
        b'{"runtime": "sim", "app": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ),
    "oversized body": ("POST", "/v1/clusters", create(app(description="x" * (9 * 1024 * 1024)))),
    "many roles": ("POST", "/v1/clusters", create(app(roles=[{"name": "r", "image": "demo"}] * 100_000))),
    "scale unknown cluster": ("POST", "/v1/clusters/cl-nope/scale", b'{"role": "node", "count": 2}'),
    "scale count bool": ("POST", "/v1/clusters/cl-nope/scale", b'{"role": "node", "count": true}'),
    "delete unknown cluster": ("DELETE", "/v1/clusters/cl-nope", b""),
    "cluster id traversal": ("GET", "/v1/clusters/..%2F..%2Fruntimes", b""),
    "wait bad timeout": ("GET", "/v1/clusters/cl-nope/wait?timeout=-1", b""),
    "runtime bad provider": ("POST", "/v1/runtimes", b'{"name": "x", "provider": "../../os"}'),
    "runtime name hostile": (
        "POST",
        "/v1/runtimes",
        json.dumps({"name": "../sim", "provider": "qingcloud", "endpoint": "http://127.0.0.1:1"}).encode(),
    ),
}


# Cases that find a bug of another part: they fail loudly once fixed (strict), so the mark goes then.
KNOWN_BUGS: dict[str, str] = {}


def cases() -> list[Any]:
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name]))
        if name in KNOWN_BUGS
        else name
        for name in CASES
    ]


@pytest_asyncio.fixture(scope="module")
async def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(Path(tmp_path_factory.mktemp("bad-input"))) as stack:
        yield stack


async def snapshot(stack: Stack) -> tuple[Any, ...]:
    async with stack.api() as api:
        clusters = await api.get("/v1/clusters", all="1")
        runtimes = await api.get("/v1/runtimes")
        health = await api.get("/healthz")
    return clusters, runtimes, await stack.ledger(), health


@pytest.mark.parametrize("case", cases())
async def test_bad_input_is_a_clear_4xx_and_changes_nothing(shared_stack: Stack, case: str) -> None:
    method, path, body = CASES[case]
    before = await snapshot(shared_stack)
    headers = {"Authorization": f"Bearer {shared_stack.token}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, shared_stack.api_url + path, data=body, headers=headers) as response,
    ):
        status, text = response.status, await response.text()
    assert 400 <= status < 500, f"{case}: {status} {text[:300]}"
    error = json.loads(text)["error"]
    assert error["code"] and error["message"], text[:300]
    assert await snapshot(shared_stack) == before, f"{case}: the request changed something"
    print(f"\nCHAOS bad-input[{case}]: {status} {error['code']}: {error['message'][:100]}")
