"""The CLI as a process against a real admin API (in this test's loop) over a real etcd."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from cli_helpers import ADMIN, ALICE, PITRIX, Run

from pitrix.api.app import create_app
from pitrix.api.auth import Tokens
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.service import RuntimeService
from pitrix.sealing import Sealer
from pitrix.settings import TokenEntry
from pitrix.store import Store


@pytest.fixture
async def api_server(store: Store, sealer: Sealer) -> AsyncIterator[TestServer]:
    """The admin API over a running service; a test may close it early (pitrixd going away)."""
    # The dead runtime's refused connections are retryable: retry them quickly, not for 17 s.
    service = RuntimeService(
        store, retry=RetryPolicy(attempts=2, first_delay=0.05, max_delay=0.1), sealer=sealer
    )
    await service.start()
    tokens = Tokens(
        [TokenEntry(token=ADMIN, owner="ops", admin=True), TokenEntry(token=ALICE, owner="alice")]
    )
    test_server = TestServer(create_app(service, tokens), host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()
        await service.stop()


@pytest.fixture
def server(api_server: TestServer) -> str:
    return str(api_server.make_url("")).rstrip("/")


@pytest.fixture
def cli(server: str, tmp_path: Path) -> Run:
    """Run ``pitrix ARGS`` with a config file pointing at the server; (exit code, stdout, stderr)."""
    config = tmp_path / "cli.toml"
    config.write_text(f'url = "{server}"\ntoken = "{ALICE}"\n')

    async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_")}
        environ["PITRIX_CONFIG"] = str(config)
        environ.update(env or {})
        process = await asyncio.create_subprocess_exec(
            PITRIX, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    return run
