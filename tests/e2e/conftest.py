"""An in-process RuntimeService over the session etcd, driving a simulator process of its own.

Actions the admin API does not offer yet (stop, start, update_env, recover) are driven through
the service directly; everything below it (cloud, VMs, agents, metad) is as real as in the demo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from e2e_cloud import Cloud
from e2e_daemons import runtime_definition, start_simulator

from pitrix.cli.demo import stop_child
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.service import RuntimeService
from pitrix.store import Store
from simulator.testing import random_network


@pytest.fixture
def recovery_policy() -> RecoveryPolicy:
    """Auto-recovery off unless a test module turns it on (by overriding this fixture)."""
    return RecoveryPolicy(enabled=False)


@pytest.fixture
async def cloud(store: Store, tmp_path: Path, recovery_policy: RecoveryPolicy) -> AsyncIterator[Cloud]:
    sim = await start_simulator(tmp_path, random_network())
    service = RuntimeService(store, recovery=recovery_policy)
    try:
        await service.start()
        await service.put_runtime(runtime_definition(sim))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield Cloud(service, sim, http, tmp_path)
    finally:
        await service.stop()
        await stop_child(sim)
