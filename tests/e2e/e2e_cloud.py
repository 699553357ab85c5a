"""The e2e tests' cloud (a RuntimeService over a simulator process) and the demo app's spec.

A module of its own, not the conftest, so that test modules import it by a name no other test
directory shares.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from e2e_daemons import APP, ledger, live, runtime_definition, start_simulator

from pitrix.cli.demo import Child, stop_child
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.service import RuntimeService
from pitrix.sealing import Sealer
from pitrix.store import Store


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


@contextlib.asynccontextmanager
async def simulated_cloud(
    store: Store,
    workdir: Path,
    *sim_args: str,
    runtime: Callable[[Child], dict[str, Any]] = runtime_definition,
    recovery: RecoveryPolicy | None = None,
) -> AsyncIterator[Cloud]:
    """A simulator process (``sim_args``: ``--light``, ...) and a RuntimeService with its runtime."""
    sim = await start_simulator(workdir, *sim_args)
    service = RuntimeService(
        store, recovery=recovery or RecoveryPolicy(enabled=False), sealer=Sealer.generate()
    )
    try:
        await service.start()
        await service.put_runtime(runtime(sim))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield Cloud(service, sim, http, workdir)
    finally:
        await service.stop()
        await stop_child(sim)


def demo_app(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(APP.read_text())
    spec.update(changes)
    return spec
