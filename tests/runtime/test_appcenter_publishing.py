"""The register step and its kin publishing an AppCenter-profile app in AppCenter's layout, against
a real etcd and metad, read back as the instances read it: cluster facts and endpoints under
``/cluster``, the extra host keys, role-less ``hosts/<iid>``, operation keys, the linked env; and a
native app's metadata keeping its shape."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.runtime.actions import BY_NAME
from pitrix.runtime.jobs import _clear_operation_keys
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.records import Cluster, Job, MetadataCluster, Node, Runtime
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps import membership, operation_keys, publishing
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.steps.nodes import save
from pitrix.sealing import Sealer
from pitrix.store import Store

RUNTIME = Runtime.model_validate(
    {
        "name": "r",
        "provider": "qingcloud",
        "zone": "pek3a",
        "endpoint": "http://api.example.test:7777",
        "region": "pek3",
        "vxnets": ["vxnet-abc"],
    }
)
APPCENTER: dict[str, Any] = {
    "name": "kv",
    "version": "1.0",
    "profile": "appcenter",
    "env": {"client.port": {"type": "integer", "default": 2379}, "requirepass": {"type": "password"}},
    "endpoints": {"client": {"port": "env.client.port", "protocol": "tcp"}, "peer": {"port": 2380}},
    "roles": [
        {"name": "etcd_node", "count": 2, "image": "x", "passphraseless": "ssh-rsa"},
        {"name": "proxy", "count": 1, "image": "x"},
    ],
}
ROLELESS: dict[str, Any] = {
    "name": "zk",
    "version": "1.0",
    "profile": "appcenter",
    "roleless": True,
    "roles": [{"name": "zk_node", "count": 2, "image": "x"}],
}
NATIVE: dict[str, Any] = {
    "name": "web",
    "version": "1.0",
    "env": {"port": {"type": "integer", "default": 80}},
    "endpoints": {"http": {"port": "env.port"}},
    "roles": [{"name": "web", "count": 1, "image": "x"}],
}


@dataclass
class World:
    store: Store
    sealer: Sealer
    manage: MetadManagementClient
    metad: Metad
    net: str

    def context(self, app: dict[str, Any], env: dict[str, dict[str, str]] | None = None) -> JobContext:
        spec = parse_spec(app)
        counts = {r.name: r.count for r in spec.roles}
        cluster = Cluster(
            id="cl-1", name="c", owner="usr-a", runtime="r", app=spec, counts=counts, env=env or {}
        )
        return JobContext(
            store=self.store,
            cluster=cluster,
            job=Job(id="j-1", cluster_id="cl-1", action="create"),
            provider=None,  # type: ignore[arg-type]  # no step here reaches the cloud
            metadata=MetadataCluster(owner="usr-a", runtime="r", name="m"),
            metad=self.manage,
            agents=None,  # type: ignore[arg-type]  # no step here waits on an agent
            sealer=self.sealer,
            keypairs=KeyPairs(self.store, self.sealer),
            runtime=RUNTIME,
        )

    async def nodes(self, ctx: JobContext) -> list[str]:
        """Node records with instances and addresses (as run-instances leaves them); their ids."""
        ids = []
        host = 10
        for role in ctx.cluster.app.roles:
            for index in range(1, role.count + 1):
                node_id = f"{role.name}-{index}"
                node = Node(
                    node_id=node_id, role=role.name, index=index, name=f"cl-1-{node_id}",
                    instance_id=f"i-{role.name}{index}", ip=f"{self.net}.{host}", status="running",
                )  # fmt: skip
                await save(ctx, node)
                ids.append(node_id)
                host += 1
        return ids

    async def read(self, ip: str, path: str) -> tuple[int, Any]:
        """GET the instance API as the instance at ``ip`` (plain HTTP: metad knows it by address)."""
        connector = aiohttp.TCPConnector(local_addr=(ip, 0))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(self.metad.instance_url + path, headers={"Accept": "application/json"}) as response,
        ):
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body


@pytest.fixture
async def world(store: Store, sealer: Sealer) -> AsyncIterator[World]:
    net = f"127.{random.randint(101, 254)}.{random.randint(0, 255)}"
    metad = Metad(store, f"{net}.1", 0, 0, wait_timeout=30.0, keepalive=0.3)
    await metad.start()
    manage = MetadManagementClient(metad.manage_url, idle_timeout=5.0)
    try:
        yield World(store, sealer, manage, metad, net)
    finally:
        await manage.close()
        await metad.stop()


async def test_an_appcenter_app_reads_appcenters_cluster_and_host_keys(world: World) -> None:
    ctx = world.context(APPCENTER, env={"_cluster": {"requirepass": "pw"}})
    ids = await world.nodes(ctx)
    for _ in range(2):  # a resumed register writes the same
        await publishing.register(ctx, ids)
    status, view = await world.read(f"{world.net}.10", "/self")
    assert status == 200
    cluster = view["cluster"]
    assert {k: cluster[k] for k in ("zone", "vxnet", "user_id", "region_id", "app_version")} == {
        "zone": "pek3a",
        "vxnet": "vxnet-abc",
        "user_id": "usr-a",
        "region_id": "pek3",
        "app_version": "1.0",
    }
    assert cluster["api_server"] == {"host": "api.example.test", "port": "7777", "protocol": "http"}
    # endpoints under /cluster, the env port resolved (also in the top-level section)
    endpoints = {"client": {"port": "2379", "protocol": "tcp"}, "peer": {"port": "2380", "protocol": "tcp"}}
    assert cluster["endpoints"] == endpoints and view["endpoints"] == endpoints
    host = view["host"]
    assert host["role"] == host["gid"] == "etcd_node" and host["zone"] == "pek3a"
    assert (host["hypervisor"], host["instance_class"], host["pub_key"]) == ("kvm", "0", "")
    assert len(host["gsid"]) == 9 and host["gsid"].isdigit()
    assert "token" not in host  # AppCenter shows one only from a package's own script
    # role names as given; gsid stable per node and distinct between nodes
    assert sorted(view["hosts"]) == ["etcd_node", "proxy"]
    peer = view["hosts"]["etcd_node"]["i-etcd_node2"]
    assert peer["gsid"] != host["gsid"]
    assert peer["gsid"] == publishing.gsid("cl-1", "etcd_node-2")
    # the flat cluster-level env a linking cluster reads (passwords included, as AppCenter's)
    assert await world.manage.get_data("/clusters/cl-1/linked-env") == {
        "client.port": "2379",
        "requirepass": "pw",
    }


async def test_runtime_settings_missing_give_appcenters_defaults(world: World) -> None:
    ctx = world.context(APPCENTER)
    ctx.runtime = Runtime(name="r", provider="aws")
    entry = publishing.cluster_entry(ctx)
    assert (entry["zone"], entry["vxnet"]) == ("", "vxnet-0")
    assert "region_id" not in entry and "api_server" not in entry
    ctx.runtime = None  # a context built without its runtime record
    assert publishing.cluster_entry(ctx)["vxnet"] == "vxnet-0"
    # The vxnet the instances were made in (the runtime's network) is the one published.
    ctx.runtime = RUNTIME.model_copy(update={"network": "vxnet-made"})
    assert publishing.cluster_entry(ctx)["vxnet"] == "vxnet-made"
    simulated = Runtime.model_validate({"name": "r", "provider": "qingcloud", "hypervisor": "simulator"})
    ctx.runtime = simulated
    node = Node(node_id="proxy-1", role="proxy", index=1, name="n", instance_id="i-1", ip="127.0.0.9")
    assert publishing.host_entry(ctx, node)["hypervisor"] == "simulator"


async def test_a_roleless_app_is_published_flat_and_leaves_flat(world: World) -> None:
    ctx = world.context(ROLELESS)
    ids = await world.nodes(ctx)
    await publishing.register(ctx, ids, adding=True)
    status, view = await world.read(f"{world.net}.11", "/self")
    assert status == 200
    assert sorted(view["hosts"]) == ["i-zk_node1", "i-zk_node2"]
    assert sorted(view["adding-hosts"]) == ["i-zk_node1", "i-zk_node2"]
    assert view["host"]["instance_id"] == "i-zk_node2"
    assert view["host"]["role"] == view["host"]["gid"] == ""
    mapping = await world.manage.get_mapping("i-zk_node1")
    assert mapping is not None and mapping["layout"] == "roleless" and mapping["role"] == "zk_node"

    # scale-in's leavers, and recover's replaced nodes, under deleting-hosts without a role level
    await membership.mark_leaving(ctx, "zk_node", 1, ["zk_node-2"])
    assert sorted(await world.manage.get_data("/clusters/cl-1/deleting-hosts")) == ["i-zk_node2"]
    await publishing.clear(ctx, "deleting-hosts")
    await membership.mark_replaced(ctx, {"zk_node-1": "i-zk_node1"})
    assert sorted(await world.manage.get_data("/clusters/cl-1/deleting-hosts")) == ["i-zk_node1"]
    # an env rollout writes the node's flat host entry
    await world.manage.put_data(
        publishing.host_path(ctx, (await _node(ctx, "zk_node-1"))), {"env": {"k": "v"}}
    )
    assert (await world.read(f"{world.net}.10", "/self/host/env"))[1] == {"k": "v"}

    await publishing.unregister(ctx, ["zk_node-2"])
    hosts = await world.manage.get_data("/clusters/cl-1/hosts")
    assert sorted(hosts) == ["i-zk_node1"]
    assert (await world.read(f"{world.net}.11", "/self"))[0] == 403  # forgotten: nobody to metad


async def _node(ctx: JobContext, node_id: str) -> Node:
    from pitrix.runtime.steps.nodes import members

    (node,) = await members(ctx, [node_id])
    return node


async def test_a_native_apps_metadata_keeps_its_shape(world: World) -> None:
    ctx = world.context(NATIVE, env={"_cluster": {"port": "8080"}})
    ids = await world.nodes(ctx)
    await publishing.register(ctx, ids)
    _, view = await world.read(f"{world.net}.10", "/self")
    assert set(view["host"]) == {
        "env", "instance_id", "ip", "sid", "gid", "node_id", "role", "cpu", "memory", "status",
    }  # fmt: skip
    assert set(view["cluster"]) == {"cluster_id", "app_id", "app_version", "owner", "runtime", "global_uuid"}
    # the one change: a port given as env.<key> is published as that parameter's value
    assert view["endpoints"] == {"http": {"port": "8080", "protocol": "tcp"}}
    assert await world.manage.get_data("/clusters/cl-1/linked-env") is None
    # an env change republishes it (update_env's publish-env step)
    await publishing.publish_env_sections(ctx, {"_cluster": {"port": "9090"}})
    assert (await world.read(f"{world.net}.10", "/self/endpoints/http/port"))[1] == "9090"


async def test_update_env_republishes_appcenter_endpoints_and_linked_env(world: World) -> None:
    ctx = world.context(APPCENTER)
    await publishing.register(ctx, await world.nodes(ctx))
    await publishing.publish_env_sections(ctx, {"_cluster": {"client.port": "12379"}})
    _, view = await world.read(f"{world.net}.12", "/self")
    assert view["cluster"]["endpoints"]["client"]["port"] == "12379"
    assert view["endpoints"]["client"]["port"] == "12379"
    assert view["cluster"]["zone"] == "pek3a"  # the rest of the cluster entry stays
    assert (await world.manage.get_data("/clusters/cl-1/linked-env"))["client.port"] == "12379"
    plan = BY_NAME["update_env"].plan(
        ctx, BY_NAME["update_env"].decode({"env": {"_cluster": {"a": "b"}}, "previous": {}})
    )
    assert [s.name for s in plan.steps][-2:] == ["commit-env", "publish-env"]


async def test_operation_keys_are_written_and_removed_idempotently(world: World) -> None:
    ctx = world.context(APPCENTER)
    await publishing.register(ctx, await world.nodes(ctx))
    ip = f"{world.net}.10"
    for _ in range(2):  # a resumed job writes the same again
        await operation_keys.mark_upgrade(ctx, "1.0", "1.1")
    assert (await world.read(ip, "/self/upgrade-audit"))[1] == {
        "from_app_version": "1.0",
        "to_app_version": "1.1",
    }
    await operation_keys.mark_vertical_scaling(ctx, ["etcd_node", "proxy"])
    assert (await world.read(ip, "/self/vertical-scaling-roles"))[1] == "etcd_node,proxy"
    await operation_keys.mark_rebuild(ctx, ["etcd_node-2"])
    assert (await world.read(ip, "/self/rebuild-audit"))[1] == "etcd_node-2"
    for _ in range(2):
        await operation_keys.unmark(ctx, "upgrade-audit")
    assert (await world.read(ip, "/self/upgrade-audit"))[0] == 404
    # a failed resize (or recover) takes whatever key it left with it
    await _clear_operation_keys(ctx, Job(id="j-2", cluster_id="cl-1", action="resize"))
    for section in ("vertical-scaling-roles", "rebuild-audit"):
        assert (await world.read(ip, f"/self/{section}"))[0] == 404


def test_plans_write_operation_keys_first_and_remove_them_last_for_appcenter_apps(world: World) -> None:
    appcenter = world.context(APPCENTER)
    appcenter.node_ids = ["etcd_node-1", "etcd_node-2", "proxy-1"]
    resize = BY_NAME["resize"]
    args = resize.decode(
        {
            "targets": {
                "proxy": {
                    "cpu": 2,
                    "memory": 2048,
                    "instance_type": "",
                    "instance_changes": True,
                    "volume_grows": False,
                }
            },
            "nodes": {"proxy": ["proxy-1"]},
        }
    )
    names = [s.name for s in resize.plan(appcenter, args).steps]
    assert names[0] == "vertical-scaling-roles" and names[-1] == "clear-vertical-scaling-roles"
    recover = BY_NAME["recover"]
    names = [s.name for s in recover.plan(appcenter, recover.decode({"nodes": {"proxy-1": "i-1"}})).steps]
    assert names[0] == "rebuild-audit" and names[-1] == "clear-rebuild-audit"
    native = world.context(NATIVE)
    native.node_ids = ["web-1"]
    names = [s.name for s in recover.plan(native, recover.decode({"nodes": {"web-1": "i-1"}})).steps]
    assert "rebuild-audit" not in names and "clear-rebuild-audit" not in names
