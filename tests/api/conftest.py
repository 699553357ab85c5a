"""An admin API over a real RuntimeService and etcd, with tokens for two owners and an admin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from api_helpers import TOKENS

from pitrix.api.app import create_app
from pitrix.api.auth import Tokens
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.service import RuntimeService
from pitrix.sealing import Sealer
from pitrix.store import Store


@pytest.fixture
async def service(store: Store, sealer: Sealer) -> AsyncIterator[RuntimeService]:
    # DEAD_CLOUD's refused connections are retryable: fail them after one quick retry, not 17 s.
    service = RuntimeService(
        store, retry=RetryPolicy(attempts=2, first_delay=0.05, max_delay=0.1), sealer=sealer
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def api(service: RuntimeService) -> AsyncIterator[TestClient[Any, Any]]:
    client = TestClient(TestServer(create_app(service, Tokens(TOKENS)), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
