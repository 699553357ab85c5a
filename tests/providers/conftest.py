"""A fresh simulator per test (own state dir, own /24 of loopback), a provider on it, a beacon;
one moto server (AWS) for the whole session, since it takes seconds to start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from moto_helpers import MotoServer, start_moto

from pitrix.providers.qingcloud import QingCloudProvider
from simulator.cloud import Simulator
from simulator.testing import Beacon, random_network


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    simulator = Simulator(tmp_path / "sim", network=random_network())
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def provider(sim: Simulator) -> AsyncIterator[QingCloudProvider]:
    client = QingCloudProvider.from_runtime(sim.runtime())
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def beacon() -> AsyncIterator[Beacon]:
    listener = await Beacon().start()
    try:
        yield listener
    finally:
        await listener.stop()


@pytest.fixture(scope="session")
async def moto() -> AsyncIterator[MotoServer]:
    server = await start_moto()
    try:
        yield server
    finally:
        await server.stop()
