"""One moto server (AWS) for the whole session, since it takes seconds to start; the simulator
fixtures (sim, provider, beacon) come from tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from moto_helpers import MotoServer, start_moto


@pytest.fixture(scope="session")
async def moto() -> AsyncIterator[MotoServer]:
    server = await start_moto()
    try:
        yield server
    finally:
        await server.stop()
