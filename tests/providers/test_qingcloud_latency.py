"""RunInstances → running latency through the provider, for 1 and 20 VMs (printed; run with -s)."""

from __future__ import annotations

import time

import pytest

from pitrix.providers.base import InstanceSpec
from pitrix.providers.qingcloud import QingCloudProvider
from simulator.cloud import Simulator
from simulator.testing import Beacon, daemon_userdata


@pytest.mark.parametrize("count", [1, 20])
async def test_run_to_running_latency(
    sim: Simulator, provider: QingCloudProvider, beacon: Beacon, count: int
) -> None:
    specs = [
        InstanceSpec(name=f"lat-{n:02d}", image="pitrix-metadata", userdata=daemon_userdata(beacon.port))
        for n in range(count)
    ]
    start = time.perf_counter()
    created = await provider.run_instances(specs)
    accepted = time.perf_counter() - start
    running = await provider.wait_running([i.instance_id for i in created], timeout=30)
    to_running = time.perf_counter() - start
    reported = {(await beacon.next(timeout=30)).split()[0] for _ in specs}
    to_daemons = time.perf_counter() - start
    assert {i.status for i in running} == {"running"}
    assert reported == {i.instance_id for i in created}
    assert len({i.private_ip for i in running}) == count
    print(
        f"\n{count} VM(s): RunInstances answered {accepted * 1000:.0f} ms, all running "
        f"{to_running * 1000:.0f} ms, all userdata daemons listening {to_daemons * 1000:.0f} ms"
    )
    await provider.terminate_instances([i.instance_id for i in created])
    assert not list((sim.state_dir / "vms").iterdir())
