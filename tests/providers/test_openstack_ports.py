"""Reserved addresses on OpenStack: Neutron ports without a device, against the simulator's
OpenStack face (ports take their fixed IPs from the same pool as VMs and QingCloud VIPs)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest
from provider_harness import simulator_clouds

from pitrix.providers.addresses import provider_offers
from pitrix.providers.base import ProviderError
from pitrix.providers.openstack import OpenStackProvider
from pitrix.providers.qingcloud import QingCloudProvider
from simulator.cloud import Simulator


@pytest.fixture
async def openstack(sim: Simulator) -> AsyncIterator[OpenStackProvider]:
    client = OpenStackProvider.from_runtime(simulator_clouds(sim)["openstack"].runtime)
    try:
        yield client
    finally:
        await client.close()


async def test_a_port_reserves_an_address_until_it_is_deleted(
    sim: Simulator, openstack: OpenStackProvider, provider: QingCloudProvider
) -> None:
    assert provider_offers("openstack")
    made = await openstack.allocate_address("cl-1-vip-vip", "private", {})
    assert made.network == "private" and made.address
    assert ipaddress.IPv4Address(made.address) in sim.pool.network
    found = await openstack.find_address("cl-1-vip-vip", "private")
    assert found is not None and (found.address_id, found.address) == (made.address_id, made.address)
    assert await openstack.find_address("cl-1-vip-other", "private") is None
    # one pool for every face: a QingCloud VIP never gets the port's address
    vip = await provider.allocate_address("cl-2-vip-vip", "", {})
    assert vip.address != made.address
    await openstack.release_address(made.address_id)
    assert await openstack.find_address("cl-1-vip-vip", "private") is None
    await openstack.release_address(made.address_id)  # gone already: released, no error


async def test_a_port_needs_a_network(openstack: OpenStackProvider) -> None:
    with pytest.raises(ProviderError, match="needs a network"):
        await openstack.allocate_address("x", "", {})
