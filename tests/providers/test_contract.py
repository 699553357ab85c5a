"""The provider contract: every registered cloud behaves the same for what the runtime relies on.

Each test runs against qingcloud, openstack and aws (the simulator's three faces), through
``load_provider`` as the runtime builds them. Every test works under a cluster id of its own and
must leave no live instance behind: the teardown checks that by name and by tag.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from provider_harness import Cloud, simulator_clouds, tagged

from pitrix.providers.base import Instance, InstanceSpec, Provider, ProviderError
from pitrix.providers.registry import load_provider
from pitrix.ssh import host_keys as pinned
from simulator.cloud import Simulator
from simulator.testing import random_network

PROVIDERS = ["qingcloud", "aws", "openstack"]


@pytest.fixture(scope="module")
async def sim(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Simulator]:
    simulator = Simulator(Path(tmp_path_factory.mktemp("contract")) / "sim", network=random_network())
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture(params=PROVIDERS)
def cloud(request: pytest.FixtureRequest) -> Cloud:
    sim: Simulator = request.getfixturevalue("sim")
    return simulator_clouds(sim)[request.param]


@pytest.fixture
def cid() -> str:
    """A cluster id of this test's own; instance names start with it."""
    return "ct" + secrets.token_hex(4)


@pytest.fixture
async def provider(cloud: Cloud, cid: str) -> AsyncIterator[Provider]:
    client = load_provider(cloud.name, cloud.runtime)
    try:
        yield client
        leftovers = await client.describe_instances(name_prefix=cid)
        if leftovers:
            await client.terminate_instances([i.instance_id for i in leftovers])
            pytest.fail(f"test left instances behind: {[i.name for i in leftovers]}")
    finally:
        await client.close()


def spec(cloud: Cloud, cid: str, node: str, **overrides: object) -> InstanceSpec:
    fields: dict[str, object] = {
        "name": f"{cid}-{node}",
        "image": cloud.image,
        "userdata": "#!/bin/sh\necho contract\n",
        "tags": {"pitrix:cluster": cid, "pitrix:owner": "usr-contract", "pitrix:node": node},
    }
    fields.update(overrides)
    return InstanceSpec(**fields)  # type: ignore[arg-type]


async def ensure(provider: Provider, wanted: InstanceSpec) -> Instance:
    """The runtime's create step: look the name up first, create only when it is not there."""
    found = [i for i in await provider.describe_instances(name_prefix=wanted.name) if i.name == wanted.name]
    if found:
        return found[0]
    [created] = await provider.run_instances([wanted])
    return created


async def terminate_all(provider: Provider, instances: list[Instance]) -> None:
    await provider.terminate_instances([i.instance_id for i in instances])


# -- the contract -------------------------------------------------------------------------------------


async def test_registered_and_protocol(cloud: Cloud, provider: Provider) -> None:
    assert isinstance(provider, Provider)
    assert provider.name == cloud.name


async def test_create_then_wait_running(cloud: Cloud, provider: Provider, cid: str) -> None:
    [created] = await provider.run_instances([spec(cloud, cid, "n1")])
    assert created.name == f"{cid}-n1" and created.instance_id
    assert created.status in ("pending", "running")
    [running] = await provider.wait_running([created.instance_id], timeout=30)
    assert running.instance_id == created.instance_id and running.status == "running"
    assert running.private_ip and running.name == f"{cid}-n1"
    [described] = await provider.describe_instances(instance_ids=[created.instance_id])
    assert described.status == "running" and described.private_ip == running.private_ip
    await terminate_all(provider, [created])


async def test_lookup_before_create_makes_one_instance(cloud: Cloud, provider: Provider, cid: str) -> None:
    wanted = spec(cloud, cid, "n1")
    first = await ensure(provider, wanted)
    again = await ensure(provider, wanted)  # the step repeated after a crash
    assert again.instance_id == first.instance_id
    found = await provider.describe_instances(name_prefix=cid)
    assert [i.instance_id for i in found] == [first.instance_id]
    await terminate_all(provider, found)


async def test_describe_by_name_prefix_is_a_prefix(cloud: Cloud, provider: Provider, cid: str) -> None:
    created = await provider.run_instances(
        [
            spec(cloud, cid, "n1"),
            spec(cloud, cid, "n2"),
            spec(cloud, cid, "n3", name=f"{cid}x-n3"),  # shares the prefix, not the cluster
            spec(cloud, cid, "n4", name=f"z{cid}-n4"),  # contains the prefix but does not start with it
        ]
    )
    try:
        found = await provider.describe_instances(name_prefix=f"{cid}-")
        assert sorted(i.name for i in found) == [f"{cid}-n1", f"{cid}-n2"]
        by_id = await provider.describe_instances(instance_ids=[created[0].instance_id, cloud.unknown_id])
        assert [i.instance_id for i in by_id] == [created[0].instance_id]
        assert await provider.describe_instances(instance_ids=[]) == []
    finally:
        await terminate_all(provider, created)


async def test_leak_detection_by_tag(
    cloud: Cloud, provider: Provider, cid: str, request: pytest.FixtureRequest
) -> None:
    if not cloud.keeps_tags:
        request.applymarker(pytest.mark.xfail(reason=f"{cloud.name} does not keep tags yet", strict=True))
    other = "ct" + secrets.token_hex(4)
    created = await provider.run_instances(
        [
            spec(cloud, cid, "n1"),
            spec(cloud, cid, "n2"),
            spec(cloud, cid, "n3", name=f"{cid}-renamed"),
            spec(cloud, other, "n1", name=f"{cid}-foreign", tags={"pitrix:cluster": other}),
        ]
    )
    try:
        mine = await tagged(provider, {"pitrix:cluster": cid})
        assert sorted(i.instance_id for i in mine) == sorted(i.instance_id for i in created[:3])
        assert all(i.tags["pitrix:owner"] == "usr-contract" for i in mine)
        assert [i.name for i in await tagged(provider, {"pitrix:cluster": other})] == [f"{cid}-foreign"]
    finally:
        await terminate_all(provider, created)
    assert await tagged(provider, {"pitrix:cluster": cid}) == []


async def test_stop_and_start(cloud: Cloud, provider: Provider, cid: str) -> None:
    [created] = await provider.run_instances([spec(cloud, cid, "n1")])
    iid = created.instance_id
    await provider.wait_running([iid], timeout=30)
    await provider.stop_instances([iid])
    [stopped] = await provider.describe_instances(instance_ids=[iid])
    assert stopped.status == "stopped"
    await provider.stop_instances([iid])  # already stopped: nothing to do, no error
    with pytest.raises(ProviderError) as stopped_error:
        await provider.wait_running([iid], timeout=5)
    assert not stopped_error.value.transient
    await provider.start_instances([iid])
    [running] = await provider.wait_running([iid], timeout=30)
    assert running.status == "running"
    await provider.start_instances([iid])  # already running
    await terminate_all(provider, [created])


async def test_terminate_is_idempotent(cloud: Cloud, provider: Provider, cid: str) -> None:
    [created] = await provider.run_instances([spec(cloud, cid, "n1")])
    iid = created.instance_id
    await provider.wait_running([iid], timeout=30)
    await provider.terminate_instances([iid])
    assert await provider.describe_instances(instance_ids=[iid]) == []
    assert await provider.describe_instances(name_prefix=cid) == []
    await provider.terminate_instances([iid, cloud.unknown_id])  # repeated after a crash
    await provider.terminate_instances([])
    with pytest.raises(ProviderError):
        await provider.wait_running([iid], timeout=5)


async def test_wait_running_on_an_unknown_instance_fails(cloud: Cloud, provider: Provider) -> None:
    with pytest.raises(ProviderError, match="missing"):
        await provider.wait_running([cloud.unknown_id], timeout=5)
    assert await provider.wait_running([], timeout=1) == []


async def test_bad_image_is_a_clear_error(cloud: Cloud, provider: Provider, cid: str) -> None:
    image = "ami-0badbad0" if cloud.name == "aws" else "no-such-image"
    with pytest.raises(ProviderError) as error:
        await provider.run_instances([spec(cloud, cid, "n1", image=image)])
    assert not error.value.transient
    assert image in str(error.value)
    assert await provider.describe_instances(name_prefix=cid) == []


async def test_one_bad_spec_fails_the_batch_and_the_rest_are_found(
    cloud: Cloud, provider: Provider, cid: str
) -> None:
    image = "ami-0badbad0" if cloud.name == "aws" else "no-such-image"
    with pytest.raises(ProviderError, match=image):
        await provider.run_instances([spec(cloud, cid, "n1"), spec(cloud, cid, "n2", image=image)])
    # The good one was made; the runtime's next attempt finds it by name instead of making another.
    found = await provider.describe_instances(name_prefix=cid)
    assert [i.name for i in found] == [f"{cid}-n1"]
    assert (await ensure(provider, spec(cloud, cid, "n1"))).instance_id == found[0].instance_id
    await terminate_all(provider, found)


async def test_bad_flavor_is_a_clear_error(cloud: Cloud, provider: Provider, cid: str) -> None:
    with pytest.raises(ProviderError) as error:
        await provider.run_instances([spec(cloud, cid, "n1", cpu=1000)])
    assert not error.value.transient
    assert "1000" in str(error.value)
    assert await provider.describe_instances(name_prefix=cid) == []


async def test_bad_credentials_are_a_clear_error(cloud: Cloud) -> None:
    provider = load_provider(cloud.name, cloud.bad_runtime())
    try:
        with pytest.raises(ProviderError) as error:
            await provider.describe_instances()
    finally:
        await provider.close()
    assert not error.value.transient
    for secret in cloud.bad_credentials.values():
        assert str(secret) not in str(error.value)


async def test_host_keys_come_from_the_cloud(
    cloud: Cloud, provider: Provider, cid: str, request: pytest.FixtureRequest
) -> None:
    """What SSH pins: the simulator's clouds show the VM's real key (QingCloud in its description,
    Nova and EC2 on the console, cloud-init's host-key block)."""
    [created] = await provider.run_instances([spec(cloud, cid, "n1")])
    try:
        [running] = await provider.wait_running([created.instance_id], timeout=30)
        sim: Simulator = request.getfixturevalue("sim")
        published = sim.fleet.console(running.instance_id)["ssh_host_key"].strip()
        assert published.startswith("ssh-ed25519 ")
        keys = await pinned(running, provider.host_keys, timeout=30)
        assert [key.export_public_key("openssh").decode().strip() for key in keys] == [published]
    finally:
        await terminate_all(provider, [created])
