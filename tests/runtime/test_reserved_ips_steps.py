"""Reserved IPs (VIPs) end to end below the API: the reserve and release steps against a real
simulator (QingCloud's AllocateVips/DescribeVips/ReleaseVips), etcd and metad, the address read
back as the instance reads it, and the create request refusing a cloud without reserved addresses."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.providers.addresses import NoReservedAddresses, provider_offers, reserved_addresses
from pitrix.providers.base import ProviderError
from pitrix.providers.qingcloud import QingCloudProvider
from pitrix.runtime.actions.base import InvalidRequest, NoArgs
from pitrix.runtime.actions.create import Create, check_reserved_ips
from pitrix.runtime.actions.delete import Delete, DeleteArgs
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.records import Cluster, Job, MetadataCluster, Node, Runtime
from pitrix.runtime.spec import SpecError, parse_spec
from pitrix.runtime.steps import publishing, reserved_ips
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.steps.nodes import save
from pitrix.sealing import Sealer
from pitrix.store import Store
from simulator.cloud import Simulator


def app(profile: str = "appcenter", **vips: dict[str, str]) -> dict[str, Any]:
    return {
        "name": "kv",
        "version": "1.0",
        "profile": profile,
        "roles": [{"name": "kv_node", "count": 1, "image": "x"}],
        "reserved_ips": vips or {"vip": {}, "write_vip": {"description": "the writer's"}},
    }


@dataclass
class World:
    store: Store
    sealer: Sealer
    manage: MetadManagementClient
    metad: Metad
    net: str
    provider: QingCloudProvider

    def context(self, spec: dict[str, Any], cid: str = "cl-1") -> JobContext:
        parsed = parse_spec(spec)
        cluster = Cluster(
            id=cid, name="c", owner="usr-a", runtime="r", app=parsed, counts={"kv_node": 1}, env={}
        )
        return JobContext(
            store=self.store,
            cluster=cluster,
            job=Job(id="j-1", cluster_id=cid, action="create"),
            provider=self.provider,
            metadata=MetadataCluster(owner="usr-a", runtime="r", name="m"),
            metad=self.manage,
            agents=None,  # type: ignore[arg-type]  # no step here waits on an agent
            sealer=self.sealer,
            keypairs=KeyPairs(self.store, self.sealer),
            runtime=Runtime(name="r", provider="qingcloud", zone="sim"),
        )

    async def read(self, ip: str, path: str) -> Any:
        """GET the instance API as the instance at ``ip``."""
        connector = aiohttp.TCPConnector(local_addr=(ip, 0))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(self.metad.instance_url + path, headers={"Accept": "application/json"}) as answer,
        ):
            assert answer.status == 200, await answer.text()
            return await answer.json()


@pytest.fixture
async def world(
    store: Store, sealer: Sealer, sim: Simulator, provider: QingCloudProvider
) -> AsyncIterator[World]:
    net = f"127.{random.randint(101, 254)}.{random.randint(0, 255)}"
    metad = Metad(store, f"{net}.1", 0, 0, wait_timeout=30.0, keepalive=0.3)
    await metad.start()
    manage = MetadManagementClient(metad.manage_url, idle_timeout=5.0)
    try:
        yield World(store, sealer, manage, metad, net, provider)
    finally:
        await manage.close()
        await metad.stop()


async def register_one(world: World, ctx: JobContext) -> str:
    ip = f"{world.net}.10"
    node = Node(
        node_id="kv_node-1", role="kv_node", index=1, name=f"{ctx.cid}-kv_node-1",
        instance_id="i-kv1", ip=ip, status="running",
    )  # fmt: skip
    await save(ctx, node)
    await publishing.register(ctx, ["kv_node-1"])
    return ip


async def test_reserved_ips_are_allocated_once_published_and_released(world: World, sim: Simulator) -> None:
    ctx = world.context(app())
    await reserved_ips.reserve(ctx)
    first = await reserved_ips.recorded(ctx)
    assert sorted(first) == ["vip", "write_vip"]
    await reserved_ips.reserve(ctx)  # repeated (a resumed create): the same addresses, none more
    assert await reserved_ips.recorded(ctx) == first
    network = sim.pool.network
    addresses = {r["address"] for r in first.values()}
    assert len(addresses) == 2 and all(ipaddress.IPv4Address(a) in network for a in addresses)
    found = await world.provider.find_address("cl-1-vip-vip", "")
    assert found is not None and found.address == first["vip"]["address"]
    assert found.address_id == first["vip"]["address_id"] and found.network == "vxnet-0"

    ip = await register_one(world, ctx)
    cluster = await world.read(ip, "/self/cluster")
    assert cluster["endpoints"]["reserved_ips"] == {
        "vip": {"value": first["vip"]["address"]},
        "write_vip": {"value": first["write_vip"]["address"]},
    }

    # a VIP's address is given to no VM: the pool skips it
    [vm] = await world.provider.run_instances([_spec("cl-1-probe")])
    [running] = await world.provider.wait_running([vm.instance_id], timeout=30)
    assert running.private_ip not in addresses
    await world.provider.terminate_instances([vm.instance_id])

    assert await reserved_ips.release(ctx) == "released vip, write_vip"
    assert await reserved_ips.recorded(ctx) == {}
    assert await world.provider.find_address("cl-1-vip-vip", "") is None
    assert await reserved_ips.release(ctx) == "nothing to release"  # repeated: nothing left, no error


async def test_an_address_allocated_before_a_crash_is_found_not_allocated_twice(world: World) -> None:
    ctx = world.context(app(vip={}))
    # the cloud made it, the step never recorded it (the job died in between)
    made = await world.provider.allocate_address("cl-1-vip-vip", "", {})
    await reserved_ips.reserve(ctx)
    assert (await reserved_ips.recorded(ctx))["vip"]["address_id"] == made.address_id
    reply = await world.provider._client.call("DescribeVips", {"vxnets.1": "vxnet-0"})
    assert [v["vip_id"] for v in reply["vip_set"]] == [made.address_id]
    # and the release finds by name one whose record is gone
    await ctx.store.delete_prefix(f"/cluster-data/{ctx.cid}/reserved-ips/")
    assert await reserved_ips.release(ctx) == "released vip"
    assert await world.provider.find_address("cl-1-vip-vip", "") is None


async def test_a_native_app_reads_its_addresses_under_cluster_reserved_ips(world: World) -> None:
    ctx = world.context(app("native", front={}), cid="cl-2")
    await reserved_ips.reserve(ctx)
    ip = await register_one(world, ctx)
    cluster = await world.read(ip, "/self/cluster")
    assert cluster["reserved_ips"]["front"]["value"] == (await reserved_ips.recorded(ctx))["front"]["address"]
    assert "endpoints" not in cluster
    await reserved_ips.release(ctx)


async def test_the_simulator_refuses_a_taken_address_and_an_unknown_vip(world: World) -> None:
    made = await world.provider.allocate_address("a", "vxnet-1", {})
    with pytest.raises(ProviderError) as taken:
        await world.provider._client.call(
            "AllocateVips", {"vxnet_id": "vxnet-1", "vip_addrs.1": made.address}, idempotent=False
        )
    assert taken.value.code == "2500" and "already in use" in str(taken.value)
    with pytest.raises(ProviderError) as unknown:
        await world.provider._client.call("ReleaseVips", {"vips.1": "vip-nothere"}, idempotent=False)
    assert unknown.value.code == "2100"
    await world.provider.release_address("vip-nothere")  # the provider: already gone is released
    await world.provider.release_address(made.address_id)
    assert await world.provider.find_address("a", "vxnet-1") is None


def test_plans_reserve_before_booting_and_release_after_terminating() -> None:
    spec = parse_spec(app(vip={}))
    cluster = Cluster(id="cl-1", name="c", owner="o", runtime="r", app=spec, counts={"kv_node": 1})
    ctx = JobContext(
        store=None, cluster=cluster, job=Job(id="j", cluster_id="cl-1", action="create"),  # type: ignore[arg-type]
        provider=None, metadata=MetadataCluster(owner="o", runtime="r", name="m"),  # type: ignore[arg-type]
        metad=None, agents=None, sealer=None, keypairs=None,  # type: ignore[arg-type]
    )  # fmt: skip
    created = [s.name for s in Create().plan(ctx, NoArgs()).steps]
    assert created.index("reserve-ips") < created.index("run-instances") < created.index("register")
    deleted = [s.name for s in Delete().plan(ctx, DeleteArgs()).steps]
    assert deleted.index("terminate") < deleted.index("release-ips")
    plain = cluster.model_copy(update={"app": parse_spec({**app(), "reserved_ips": {}})})
    ctx.cluster = plain
    assert "reserve-ips" not in [s.name for s in Create().plan(ctx, NoArgs()).steps]


def test_a_cloud_without_reserved_addresses_is_refused_naming_the_field() -> None:
    spec = parse_spec(app())
    with pytest.raises(InvalidRequest, match=r"app.reserved_ips: provider aws has no reserved addresses"):
        check_reserved_ips(spec, "aws")
    check_reserved_ips(spec, "qingcloud")
    check_reserved_ips(parse_spec({**app(), "reserved_ips": {}}), "aws")
    assert provider_offers("qingcloud") and provider_offers("openstack")
    assert not provider_offers("aws") and not provider_offers("nope")
    with pytest.raises(NoReservedAddresses, match="provider aws has no reserved addresses"):
        reserved_addresses(type("Aws", (), {"name": "aws"})())
    with pytest.raises(SpecError, match="reserved_ips"):
        parse_spec({**app(), "reserved_ips": {"no way": {}}})


def _spec(name: str) -> Any:
    from pitrix.providers.base import InstanceSpec

    return InstanceSpec(name=name, image="pitrix-metadata")


async def test_the_api_refuses_reserved_ips_on_aws_before_making_anything(store: Store) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from pitrix.api.app import create_app
    from pitrix.runtime.service import RuntimeService

    service = RuntimeService(store, sealer=Sealer.generate())
    await service.start()
    client = TestClient(TestServer(create_app(service), host="127.0.0.1"))
    await client.start_server()
    try:
        aws = {"name": "deadaws", "provider": "aws", "region": "us-east-1", "endpoint": "http://127.0.0.1:9"}
        aws.update(access_key_id="AK", secret_access_key="very-secret")
        assert (await client.post("/v1/runtimes", json=aws)).status == 201, "runtime refused"
        answer = await client.post("/v1/clusters", json={"runtime": "deadaws", "app": app("native")})
        assert answer.status == 400, await answer.text()
        error = (await answer.json())["error"]
        assert error["message"].startswith("app.reserved_ips: provider aws has no reserved addresses")
        assert error.get("field") == "app.reserved_ips", error
        assert (await (await client.get("/v1/clusters")).json())["clusters"] == []  # nothing was made
    finally:
        await client.close()
        await service.stop()
