"""The volume half of the provider contract: the same calls behave the same on every cloud.

qingcloud, openstack and aws (EBS) run against the simulator's faces. Each test works under a cluster id
of its own and must leave no volume and no instance behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from provider_harness import Cloud
from test_contract import cid, cloud, sim, spec  # noqa: F401  (shared fixtures)

from pitrix.providers.base import Provider, VolumeSpec
from pitrix.providers.registry import load_provider

pytestmark = pytest.mark.parametrize("cloud", ["qingcloud", "aws", "openstack"], indirect=True)


@pytest.fixture
async def provider(cloud: Cloud, cid: str) -> AsyncIterator[Provider]:  # noqa: F811
    client = load_provider(cloud.name, cloud.runtime)
    try:
        yield client
        volumes = await client.describe_volumes(name_prefix=cid)
        instances = await client.describe_instances(name_prefix=cid)
        if instances:
            await client.terminate_instances([i.instance_id for i in instances])
        if volumes:
            await client.delete_volumes([v.volume_id for v in volumes])
        assert not volumes and not instances, f"test left {volumes} {instances}"
    finally:
        await client.close()


async def ensure_volume(provider: Provider, wanted: VolumeSpec) -> str:
    """The runtime's step: look the name up first, create only when it is not there."""
    found = [v for v in await provider.describe_volumes(name_prefix=wanted.name) if v.name == wanted.name]
    if found:
        return found[0].volume_id
    return (await provider.create_volume(wanted)).volume_id


async def test_volume_lifecycle_is_idempotent(cloud: Cloud, provider: Provider, cid: str) -> None:  # noqa: F811
    [instance] = await provider.run_instances([spec(cloud, cid, "n1")])
    await provider.wait_running([instance.instance_id], timeout=60)
    wanted = VolumeSpec(
        name=f"{cid}-n1-vol", size=10, tags={"pitrix:cluster": cid}, instance_id=instance.instance_id
    )
    vid = await ensure_volume(provider, wanted)
    assert await ensure_volume(provider, wanted) == vid  # the step repeated: still one volume
    [made] = await provider.describe_volumes(name_prefix=f"{cid}-")
    assert (made.volume_id, made.name, made.size, made.status) == (vid, wanted.name, 10, "available")
    assert not made.instance_id and made.device_paths == ()
    assert await provider.describe_volumes(name_prefix=f"x{cid}") == []
    assert await provider.describe_volumes(volume_ids=[]) == []

    attached = await provider.attach_volume(vid, instance.instance_id)
    again = await provider.attach_volume(vid, instance.instance_id)
    assert attached.instance_id == again.instance_id == instance.instance_id
    assert (
        attached.status == "in-use" and attached.device_paths and attached.device_paths == again.device_paths
    )
    [described] = await provider.describe_volumes(volume_ids=[vid])
    assert described.instance_id == instance.instance_id

    await provider.detach_volume(vid)
    await provider.detach_volume(vid)  # already detached: nothing to do
    [detached] = await provider.describe_volumes(volume_ids=[vid])
    assert detached.status == "available" and not detached.instance_id

    await provider.attach_volume(vid, instance.instance_id)
    await provider.terminate_instances([instance.instance_id])
    await provider.delete_volumes([vid])  # detached by the terminate, or here
    await provider.delete_volumes([vid])  # gone already: skipped
    assert await provider.describe_volumes(volume_ids=[vid]) == []
    assert await provider.describe_volumes(name_prefix=f"{cid}-") == []
