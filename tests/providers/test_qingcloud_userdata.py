"""What QingCloudProvider's RunInstances sends, as the simulator's QingCloud face receives it:
boot scripts as ``exec`` (a ``tar`` attachment beyond QingCloud's 4 KiB), the runtime's vxnet
(``vxnet-0`` without one), ``login_mode=keypair`` with a key pair."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile

import pytest

from pitrix.providers.base import InstanceSpec, ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.providers.qingcloud.provider import ATTACHMENT_LIMIT, boot_archive, runtime_vxnet
from simulator.cloud import Simulator
from simulator.vm import VM


def ran_script(marker: str, padding: int = 0) -> str:
    """A boot script that leaves ``<root>/ran`` naming itself; ``padding`` bytes of comment."""
    filler = "".join(f"# {'x' * 70}\n" for _ in range(padding // 73))
    return f'#!/bin/sh\n{filler}echo "{marker} $0" > "$PITRIX_VM_ROOT/ran"\n'


async def booted(sim: Simulator, provider: QingCloudProvider, spec: InstanceSpec) -> VM:
    [created] = await provider.run_instances([spec])
    await provider.wait_running([created.instance_id], timeout=10)
    vm = sim.fleet.vm(created.instance_id)
    assert vm is not None
    assert await asyncio.wait_for(vm.userdata_finished(), 10) == 0
    return vm


async def test_a_boot_script_goes_as_exec_into_vxnet_0_with_its_key_pair(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    pair = await provider.create_key_pair("pitrix-test")
    vm = await booted(
        sim,
        provider,
        InstanceSpec(
            name="u-1", image="pitrix-metadata", userdata=ran_script("small"), key_pair=pair.keypair_id
        ),
    )
    assert (vm.userdata_kind, vm.vxnet_id, vm.login_mode) == ("exec", "vxnet-0", "keypair")
    assert vm.keypair_ids == [pair.keypair_id]
    assert (vm.root / "ran").read_text() == f"small {vm.root}/etc/rc.local\n"


async def test_a_script_beyond_4_kib_goes_as_a_tar_attachment_and_still_runs(
    sim: Simulator, provider: QingCloudProvider
) -> None:
    script = ran_script("large", padding=6000)  # base64 of it is beyond what an exec value may be
    vm = await booted(sim, provider, InstanceSpec(name="u-2", image="pitrix-metadata", userdata=script))
    assert vm.userdata_kind == "tar" and (vm.login_mode, vm.vxnet_id) == ("passwd", "vxnet-0")
    assert (vm.root / "etc/rc.local").read_text() == script
    assert (vm.root / "ran").read_text() == f"large {vm.root}/etc/rc.local\n"


def test_the_boot_archive_holds_rc_local_alone_and_refuses_what_qingcloud_would() -> None:
    with tarfile.open(fileobj=io.BytesIO(boot_archive(b"#!/bin/sh\n")), mode="r:gz") as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert sorted(members) == ["etc", "etc/rc.local"] and members["etc/rc.local"].mode == 0o700
    noise = os.urandom(ATTACHMENT_LIMIT + 1024)  # gzip cannot shrink it under the limit
    with pytest.raises(ProviderError, match="over the"):
        boot_archive(noise)


async def test_the_runtime_network_is_the_vxnet_and_a_spec_may_name_another(sim: Simulator) -> None:
    sim.fleet.vxnets.create("vxnet-apps")
    sim.fleet.vxnets.create("vxnet-other")
    provider = QingCloudProvider.from_runtime({**sim.runtime(), "network": "vxnet-apps"})
    try:
        vm = await booted(
            sim, provider, InstanceSpec(name="u-3", image="pitrix-metadata", userdata=ran_script("n"))
        )
        assert vm.vxnet_id == "vxnet-apps"
        [other] = await provider.run_instances(
            [InstanceSpec(name="u-4", image="pitrix-metadata", network="vxnet-other")]
        )
        [described] = await provider.describe_instances(instance_ids=[other.instance_id])
        assert described.raw["vxnets"][0]["vxnet_id"] == "vxnet-other"
    finally:
        await provider.close()


async def test_an_unknown_vxnet_is_refused_with_qingcloud_not_found(sim: Simulator) -> None:
    provider = QingCloudProvider.from_runtime({**sim.runtime(), "network": "vxnet-gone"})
    try:
        with pytest.raises(ProviderError) as refused:
            await provider.run_instances([InstanceSpec(name="u-5", image="pitrix-metadata")])
        assert refused.value.code == "2100" and "vxnet-gone" in str(refused.value)
        assert sim.ledger() == []
    finally:
        await provider.close()


def test_the_runtime_vxnet_is_its_network_else_the_older_appcenter_settings() -> None:
    assert runtime_vxnet({"network": "vxnet-a", "vxnet": "vxnet-b"}) == "vxnet-a"
    assert runtime_vxnet({"network": "", "vxnet": "vxnet-b"}) == "vxnet-b"
    assert runtime_vxnet({"vxnets": ["vxnet-c", "vxnet-d"]}) == "vxnet-c"
    assert runtime_vxnet({"vxnets": []}) == runtime_vxnet({}) == ""
