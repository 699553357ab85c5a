"""Fixtures for the agent's tests: a VM root per test; a real metad (over the real etcd) with one cluster."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agent_helpers import World

from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store


@pytest.fixture
def vm_root(tmp_path: Path) -> Path:
    root = tmp_path / "vmroot"
    (root / "etc" / "confd" / "conf.d").mkdir(parents=True)
    (root / "etc" / "confd" / "templates").mkdir(parents=True)
    return root


_blocks = itertools.count(random.Random(os.getpid() * 7).randrange(0, 200))


@pytest.fixture
async def world(store: Store) -> AsyncIterator[World]:
    block = next(_blocks) % 250 + 1
    server = Metad(store, f"127.102.{block}.1", 0, 0, wait_timeout=20.0, keepalive=0.3)
    await server.start()
    manage = MetadManagementClient(server.manage_url, idle_timeout=5.0)
    w = World(server, manage, block)
    await w.seed()
    try:
        yield w
    finally:
        await manage.close()
        await server.stop()
