"""An in-process RuntimeService over the session etcd, driving a simulator process of its own.

Actions the admin API does not offer yet (stop, start, update_env, recover) are driven through
the service directly; everything below it (cloud, VMs, agents, metad) is as real as in the demo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_cloud import Cloud, simulated_cloud

from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.store import Store


@pytest.fixture
def recovery_policy() -> RecoveryPolicy:
    """Auto-recovery off unless a test module turns it on (by overriding this fixture)."""
    return RecoveryPolicy(enabled=False)


@pytest.fixture
async def cloud(store: Store, tmp_path: Path, recovery_policy: RecoveryPolicy) -> AsyncIterator[Cloud]:
    async with simulated_cloud(store, tmp_path, recovery=recovery_policy) as simulated:
        yield simulated
