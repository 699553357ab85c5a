"""Fixtures shared by every test suite: one real etcd per test session, and a store per test.

``etcd_url`` is session-scoped because starting etcd costs about a second; ``store`` gives each
test its own key prefix on it, so tests never see each other's keys, even in parallel runs.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.sealing import Sealer
from pitrix.store import Store, StoreError
from pitrix.store.embedded import EmbeddedEtcd
from simulator.cloud import Simulator
from simulator.testing import Beacon, random_network


@pytest.fixture(scope="session")
async def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """Client URL of a real etcd on 127.0.0.1 (free ports), started once and stopped at session end."""
    state_dir: Path = tmp_path_factory.mktemp("etcd")
    etcd = EmbeddedEtcd(state_dir, unsafe_no_fsync=True)
    url = await etcd.start()
    try:
        yield url
    finally:
        await etcd.stop()


@pytest.fixture
async def store(etcd_url: str) -> AsyncIterator[Store]:
    """A connected Store on the session etcd, under a prefix unique to this test."""
    s = await Store.connect([etcd_url], prefix=f"/test-{uuid.uuid4().hex}")
    try:
        yield s
    finally:
        # Keep the shared etcd small over a long session; a test that closed its store keeps its keys.
        with contextlib.suppress(StoreError):
            await s.delete_prefix("")
        await s.close()


@pytest.fixture
def sealer() -> Sealer:
    """The key a test's pitrixd seals its secrets with (a fresh one per test, held in memory)."""
    return Sealer.generate()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    """A fresh simulator per test: its own state dir and its own /24 of loopback."""
    simulator = Simulator(tmp_path / "sim", network=random_network())
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def provider(sim: Simulator) -> AsyncIterator[QingCloudProvider]:
    """The QingCloud provider on ``sim``."""
    client = QingCloudProvider.from_runtime(sim.runtime())
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def beacon() -> AsyncIterator[Beacon]:
    """A listener VM daemons report to, so tests wait on their reports instead of polling."""
    listener = await Beacon().start()
    try:
        yield listener
    finally:
        await listener.stop()
