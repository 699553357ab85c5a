"""The resize half of the provider contract: ``resize_instance`` and ``grow_volume`` on every cloud.

qingcloud, openstack and aws run against the simulator's three faces. Each call is repeated to show
it is safe to repeat (a resize to the size the instance has is a no-op), and each cloud's own
refusals come back as ``ProviderError`` with that cloud's code: a shrink, an unknown id, and on
QingCloud a resize of a running instance.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from provider_harness import Cloud
from test_contract import cid, cloud, sim, spec  # noqa: F401  (shared fixtures)

from pitrix.providers.base import Instance, Provider, ProviderError, VolumeSpec
from pitrix.providers.registry import load_provider

pytestmark = pytest.mark.parametrize("cloud", ["qingcloud", "aws", "openstack"], indirect=True)

# A size each cloud knows by name: QingCloud's c<cpu>m<GiB>, an EC2 type, a simulator flavor.
TYPES = {"qingcloud": ("c2m4", 2, 4096), "aws": ("t3.medium", 2, 4096), "openstack": ("c2m4096", 2, 4096)}
# What an unknown id is called, and the code the cloud answers it with.
UNKNOWN = {
    "qingcloud": ("i-00000000", "vol-00000000", "2100"),
    "aws": ("i-0123456789abcdef0", "vol-0123456789abcdef0", "InvalidInstanceID.NotFound"),
    "openstack": ("00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000", "404"),
}
RUNNING_REFUSED = {"qingcloud": "2500", "aws": "IncorrectInstanceState"}  # Nova resizes a running one
SHRINK = {"qingcloud": "1100", "aws": "InvalidParameterValue", "openstack": "http-400"}


@pytest.fixture
async def provider(cloud: Cloud, cid: str) -> AsyncIterator[Provider]:  # noqa: F811
    client = load_provider(cloud.name, cloud.runtime)
    try:
        yield client
        instances = await client.describe_instances(name_prefix=cid)
        if instances:
            await client.terminate_instances([i.instance_id for i in instances])
        volumes = await client.describe_volumes(name_prefix=cid)
        if volumes:
            await client.delete_volumes([v.volume_id for v in volumes])
    finally:
        await client.close()


def size_of(name: str, instance: Instance) -> tuple[int, int] | str:
    """The instance's size as its cloud describes it (cpu and MiB, or the type's name on AWS)."""
    raw: dict[str, Any] = dict(instance.raw)
    if name == "qingcloud":
        return int(raw["vcpus_current"]), int(raw["memory_current"])
    if name == "openstack":  # the simulator's flavors are named c<vCPUs>m<MiB>
        cpu, memory = str(raw["flavor"]["id"]).removeprefix("c").split("m")
        return int(cpu), int(memory)
    return str(raw["InstanceType"])


async def described(provider: Provider, instance_id: str) -> Instance:
    [found] = await provider.describe_instances(instance_ids=[instance_id])
    return found


async def test_resize_instance_is_idempotent_and_keeps_a_stopped_instance_stopped(
    cloud: Cloud,  # noqa: F811
    provider: Provider,
    cid: str,  # noqa: F811
) -> None:
    [made] = await provider.run_instances([spec(cloud, cid, "n1", cpu=1, memory=1024)])
    iid = made.instance_id
    await provider.wait_running([iid], timeout=60)
    if cloud.name in RUNNING_REFUSED:  # QingCloud and EC2 resize stopped instances only
        with pytest.raises(ProviderError) as refused:
            await provider.resize_instance(iid, cpu=2, memory=2048)
        assert refused.value.code == RUNNING_REFUSED[cloud.name], refused.value
    await provider.stop_instances([iid])

    await provider.resize_instance(iid, cpu=2, memory=2048)
    await provider.resize_instance(iid, cpu=2, memory=2048)  # the size it has: nothing to do
    after = await described(provider, iid)
    assert after.status == "stopped"
    assert size_of(cloud.name, after) in ((2, 2048), "t3.small")

    kind, cpu, memory = TYPES[cloud.name]
    await provider.resize_instance(iid, cpu=cpu, memory=memory, instance_type=kind)
    await provider.resize_instance(iid, cpu=cpu, memory=memory, instance_type=kind)
    typed = await described(provider, iid)
    assert size_of(cloud.name, typed) in ((cpu, memory), kind)

    await provider.start_instances([iid])
    [running] = await provider.wait_running([iid], timeout=60)
    assert size_of(cloud.name, running) in ((cpu, memory), kind)

    unknown_instance, _, code = UNKNOWN[cloud.name]
    with pytest.raises(ProviderError) as missing:
        await provider.resize_instance(unknown_instance, cpu=2, memory=2048)
    assert missing.value.code == code, missing.value
    await provider.terminate_instances([iid])


async def test_grow_volume_is_idempotent_and_refuses_a_shrink(
    cloud: Cloud,  # noqa: F811
    provider: Provider,
    cid: str,  # noqa: F811
) -> None:
    [made] = await provider.run_instances([spec(cloud, cid, "n1")])
    iid = made.instance_id
    await provider.wait_running([iid], timeout=60)
    volume = await provider.create_volume(VolumeSpec(name=f"{cid}-n1-vol", size=10, instance_id=iid))
    vid = volume.volume_id
    await provider.attach_volume(vid, iid)
    if not provider.online_volume_growth:
        with pytest.raises(ProviderError) as refused:  # attached to a running instance
            await provider.grow_volume(vid, 20)
        assert refused.value.code == "2500", refused.value
        await provider.stop_instances([iid])

    grown = await provider.grow_volume(vid, 20)
    again = await provider.grow_volume(vid, 20)  # the size it has: nothing to do
    assert grown.size == again.size == 20
    [seen] = await provider.describe_volumes(volume_ids=[vid])
    assert seen.size == 20 and seen.instance_id == iid

    with pytest.raises(ProviderError) as shrink:
        await provider.grow_volume(vid, 15)
    assert shrink.value.code == SHRINK[cloud.name], shrink.value
    _, unknown_volume, code = UNKNOWN[cloud.name]
    with pytest.raises(ProviderError) as missing:
        await provider.grow_volume(unknown_volume, 30)
    assert missing.value.code in (code, "InvalidVolume.NotFound"), missing.value

    await provider.terminate_instances([iid])
    await provider.delete_volumes([vid])
