"""Waiting for instances to run starts again those whose boot failed, on the real simulator."""

from __future__ import annotations

import pytest

from pitrix.providers.base import InstanceSpec, ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.runtime import booting
from pitrix.runtime.booting import wait_booted
from simulator.cloud import Simulator


async def failed_boot(sim: Simulator, provider: QingCloudProvider, name: str) -> str:
    """An instance whose first boot failed: the cloud left it stopped, its disk kept."""
    sim.faults.set_boot(failure_rate=1.0)
    [instance] = await provider.run_instances([InstanceSpec(name=name, image="pitrix-metadata")])
    with pytest.raises(ProviderError):
        await provider.wait_running([instance.instance_id], timeout=30)
    [described] = await provider.describe_instances(instance_ids=[instance.instance_id])
    assert described.status == "stopped"
    return instance.instance_id


async def test_a_failed_boot_is_started_again(sim: Simulator, provider: QingCloudProvider) -> None:
    iid = await failed_boot(sim, provider, "boots-second-time")
    sim.faults.set_boot(failure_rate=0.0)
    [running] = await wait_booted(provider, [iid], timeout=30)
    assert running.status == "running" and running.private_ip
    assert [vm["status"] for vm in sim.ledger()] == ["running"]  # the same VM, not a second one


async def test_boots_that_keep_failing_give_up(
    sim: Simulator, provider: QingCloudProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(booting, "BOOT_ATTEMPTS", 2)
    iid = await failed_boot(sim, provider, "never-boots")
    with pytest.raises(ProviderError):
        await wait_booted(provider, [iid], timeout=30)
    assert len(sim.ledger()) == 1
