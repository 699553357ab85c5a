"""Fixtures for the store's own tests: a private etcd for tests that restart or compact it.

Compaction and restarts would disturb every other test sharing the session etcd, so those
tests get an etcd of their own in their tmp_path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitrix.store import Store
from pitrix.store.embedded import EmbeddedEtcd


@pytest.fixture
async def private_etcd(tmp_path: Path) -> AsyncIterator[EmbeddedEtcd]:
    """A started EmbeddedEtcd owned by this test alone (stopped afterwards)."""
    etcd = EmbeddedEtcd(tmp_path / "state", unsafe_no_fsync=True)
    await etcd.start()
    try:
        yield etcd
    finally:
        await etcd.stop()


@pytest.fixture
async def private_store(private_etcd: EmbeddedEtcd) -> AsyncIterator[Store]:
    """A Store on ``private_etcd``."""
    s = await Store.connect([private_etcd.client_url], prefix="/private", tls=private_etcd.client_tls)
    try:
        yield s
    finally:
        await s.close()
