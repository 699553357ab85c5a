"""schemathesis over the OpenAPI document against a real pitrixd: no 5xx, no answer outside it.

pitrixd runs as a process on the test's etcd (a prefix of its own) with its runtime pointing at
a dead endpoint, so every generated request reaches real handlers, the real service and etcd.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from api_helpers import APP, DEAD_CLOUD

from pitrix.api.openapi import openapi_document

ADMIN = "conformance-admin-token-0123"
BIN = Path(sys.executable).parent


@pytest.fixture
async def pitrixd(etcd_url: str, etcd_env: dict[str, str], tmp_path: Path) -> AsyncIterator[str]:
    env = dict(
        os.environ,
        **etcd_env,
        PITRIX_ETCD__PREFIX=f"/conformance-{secrets.token_hex(4)}",
        PITRIX_API__TOKENS=json.dumps([{"token": ADMIN, "owner": "ops", "admin": True}]),
    )
    process = await asyncio.create_subprocess_exec(
        str(BIN / "pitrixd"),
        "--state-dir",
        str(tmp_path / "state"),
        "--api-listen",
        "127.0.0.1:0",
        "--etcd",
        etcd_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=(tmp_path / "pitrixd.log").open("wb"),
        env=env,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line, (tmp_path / "pitrixd.log").read_text()
        yield json.loads(line)["url"]
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def seed(url: str) -> dict[str, Any]:
    """A runtime, a registered app and one cluster, so generated ids can hit real records."""
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(url, headers=headers) as http:
        async with http.post("/v1/runtimes", json=DEAD_CLOUD) as response:
            assert response.status == 201
        async with http.post("/v1/apps", json=APP) as response:
            assert response.status == 201
        body = {"runtime": "dead", "app": f"{APP['name']}@{APP['version']}"}
        async with http.post("/v1/clusters", json=body) as response:
            assert response.status == 202, await response.text()
            return await response.json()  # type: ignore[no-any-return]


async def test_schemathesis_finds_no_server_error_and_nothing_outside_the_schema(
    pitrixd: str, tmp_path: Path
) -> None:
    created = await seed(pitrixd)
    excluded = "|".join(["wait", "events"])
    document = tmp_path / "openapi.json"  # the document pitrixd serves: the file and the actions' paths
    document.write_text(json.dumps(openapi_document()))
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[parameters]\ncid = "{created["cluster"]["id"]}"\njob_id = "{created["job"]["id"]}"\n'
        f'name = "{APP["name"]}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        str(BIN / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        str(document),
        "--url",
        pitrixd,
        "--header",
        f"Authorization: Bearer {ADMIN}",
        "--checks",
        "all",
        # The spec's schema cannot say everything the server checks (unique role names, installed
        # providers): valid-looking data may still be refused, with a 400 naming the field.
        "--exclude-checks",
        "positive_data_acceptance",
        # wait holds for up to `timeout` seconds and event streams never end, by design: they are
        # tested in test_events.py and tests/runtime instead.
        "--exclude-path-regex",
        f"/({excluded})$",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "8",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--seed",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 240)
    report = out.decode(errors="replace")
    (tmp_path / "report.txt").write_text(report)
    assert process.returncode == 0, report[report.find("FAILURES") :]
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    assert selected is not None, report
    # Every operation but the excluded ones was exercised.
    assert int(selected[1]) == int(selected[2]) - 3, report  # 2 event streams, wait
    assert f"Tested: {selected[1]}" in report, report
