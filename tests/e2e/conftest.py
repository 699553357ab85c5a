"""An in-process RuntimeService over the session etcd, driving a simulator process of its own.

Actions the admin API does not offer yet (stop, start, update_env, recover) are driven through
the service directly; everything below it (cloud, VMs, agents, metad) is as real as in the demo.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from e2e_daemons import APP, ledger, live, runtime_definition, start_simulator

from pitrix.cli.demo import Child, stop_child
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.service import RuntimeService
from pitrix.store import Store
from simulator.testing import random_network


@dataclass
class Cloud:
    service: RuntimeService
    sim: Child
    http: aiohttp.ClientSession
    workdir: Path

    @property
    def sim_url(self) -> str:
        return str(self.sim.ready["url"])

    async def ledger(self) -> list[dict[str, Any]]:
        return await ledger(self.http, self.sim_url)

    async def live_names(self) -> list[str]:
        return sorted(vm["name"] for vm in live(await self.ledger()))

    def crash_vm(self, instance_id: str) -> list[int]:
        """SIGKILL every process of one simulated VM (agent, app): the VM is dead, the cloud says running.

        The simulator tags each VM process with ``PITRIX_VM_ID`` in its environment; only processes
        carrying this VM's id (children of this test's simulator) are killed, by pid.
        """
        needle = f"PITRIX_VM_ID={instance_id}".encode()
        killed = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle in environ:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
        return killed

    def vm_file(self, instance_id: str, path: str) -> str:
        return (self.workdir / "sim" / "vms" / instance_id / "root" / path.lstrip("/")).read_text()


def demo_app(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(APP.read_text())
    spec.update(changes)
    return spec


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
