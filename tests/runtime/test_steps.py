"""The steps package: its pure helpers, and the node-record steps against a real etcd."""

from __future__ import annotations

import pytest

from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.keys import nodes_prefix, token_key
from pitrix.runtime.records import Cluster, Job, MetadataCluster, Node
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps import nodes as nodes_module
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.steps.identity import bootstrap_token, fresh_token, token_fields
from pitrix.runtime.steps.instances import forget_instances
from pitrix.runtime.steps.nodes import all_node_ids, members, nodes, plan_nodes, save, save_all
from pitrix.runtime.steps.rollout import rollout_batches
from pitrix.runtime.steps.services import service_layers
from pitrix.sealing import Sealer, get_sealed
from pitrix.store import Store

APP = {
    "name": "kv",
    "roles": [
        {
            "name": "data",
            "count": 3,
            "image": "x",
            "services": {
                "init": {"cmd": "init data", "post_start_service": True},
                "start": {"cmd": "start data", "order": 1},
            },
        },
        {
            "name": "proxy",
            "count": 1,
            "image": "x",
            "services": {"init": {"cmd": "init proxy"}, "start": {"cmd": "start proxy", "order": 2}},
        },
        {
            "name": "cache",
            "count": 2,
            "image": "x",
            "services": {"start": {"cmd": "start cache", "order": 1}},
        },
    ],
}


def cluster() -> Cluster:
    return Cluster(
        id="cl-1",
        name="kv",
        owner="o",
        runtime="r",
        app=parse_spec(APP),
        counts={"data": 3, "proxy": 1, "cache": 2},
    )


def context(store: Store, sealer: Sealer) -> JobContext:
    """A job context for steps that reach only etcd: no cloud, metad or agents behind it."""
    return JobContext(
        store=store,
        cluster=cluster(),
        job=Job(id="j-1", cluster_id="cl-1", action="create"),
        provider=None,  # type: ignore[arg-type]
        metadata=MetadataCluster(owner="o", runtime="r", name="m"),
        metad=None,  # type: ignore[arg-type]
        agents=None,  # type: ignore[arg-type]
        sealer=sealer,
        keypairs=KeyPairs(store, sealer),
    )


def test_all_node_ids_follow_the_counts_role_by_role() -> None:
    c = cluster()
    assert all_node_ids(c) == ["data-1", "data-2", "data-3", "proxy-1", "cache-1", "cache-2"]
    assert all_node_ids(c, {"data": 1, "cache": 0}) == ["data-1"]


def test_rollout_batches_put_the_canary_first_then_max_in_flight() -> None:
    ids = [f"n-{i}" for i in range(1, 6)]
    assert rollout_batches(ids, 1, 2) == [["n-1"], ["n-2", "n-3"], ["n-4", "n-5"]]
    assert rollout_batches(ids, 0, 3) == [["n-1", "n-2", "n-3"], ["n-4", "n-5"]]
    assert rollout_batches(ids, 9, 1) == [ids]
    assert rollout_batches([], 1, 1) == []


def test_service_layers_group_roles_by_order_and_filter_post_start() -> None:
    c = cluster()
    assert service_layers(c, "start") == [["data", "cache"], ["proxy"]]
    assert service_layers(c, "init") == [["data", "proxy"]]
    assert service_layers(c, "init", post_start=True) == [["data"]]
    assert service_layers(c, "init", post_start=False) == [["proxy"]]
    assert service_layers(c, "stop") == []


async def test_plan_nodes_keeps_existing_records(store: Store, sealer: Sealer) -> None:
    ctx = context(store, sealer)
    assert await plan_nodes(ctx, {"data": 2}) == "planned data-1, data-2"
    first = await members(ctx, ["data-1"])
    await save(ctx, first[0].model_copy(update={"instance_id": "i-1", "status": "running"}))
    assert await plan_nodes(ctx, {"data": 3, "proxy": 1}) == "planned data-3, proxy-1"
    assert await plan_nodes(ctx, {"data": 3, "proxy": 1}) == "nothing to plan"
    assert [n.node_id for n in await nodes(ctx)] == ["data-1", "data-2", "data-3", "proxy-1"]
    assert [n.node_id for n in await nodes(ctx, "proxy")] == ["proxy-1"]
    kept = (await members(ctx, ["data-1"]))[0]
    assert (kept.instance_id, kept.status, kept.name) == ("i-1", "running", "cl-1-data-1")


async def test_save_all_writes_the_nodes_in_one_revision_a_roles_worth_at_a_time(
    store: Store, sealer: Sealer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = context(store, sealer)
    await plan_nodes(ctx, {"data": 3, "proxy": 1, "cache": 2})
    planned = await nodes(ctx)
    kvs, _ = await store.get_prefix(nodes_prefix("cl-1"))
    assert len({kv.mod_revision for kv in kvs}) == 1  # one transaction for the six records
    before = await store.revision()
    await save_all(ctx, [])  # nothing to write: no transaction
    assert await store.revision() == before
    monkeypatch.setattr(nodes_module, "largest_transaction", lambda: 4)
    await save_all(ctx, [n.model_copy(update={"status": "running"}) for n in planned])
    kvs, _ = await store.get_prefix(nodes_prefix("cl-1"))
    assert len({kv.mod_revision for kv in kvs}) == 2  # etcd's limit kept: four, then two
    assert {n.status for n in await nodes(ctx)} == {"running"}


async def test_bootstrap_token_is_sealed_once_and_fresh_token_replaces_it(
    store: Store, sealer: Sealer
) -> None:
    ctx = context(store, sealer)
    token = await bootstrap_token(ctx, "data-1")
    assert await bootstrap_token(ctx, "data-1") == token
    kv = await store.get(token_key("cl-1", "data-1"))
    assert kv is not None and token.encode() not in kv.value  # sealed at rest
    assert await get_sealed(store, token_key("cl-1", "data-1"), sealer) == token.encode()
    fresh = await fresh_token(ctx, "data-1")
    assert fresh != token
    assert token_fields(fresh)["bootstrap_sha256"] != token_fields(token)["bootstrap_sha256"]


async def test_forget_instances_resets_only_nodes_still_naming_the_old_instance(
    store: Store, sealer: Sealer
) -> None:
    ctx = context(store, sealer)
    await save(ctx, Node(node_id="data-1", role="data", index=1, name="cl-1-data-1", instance_id="i-old"))
    await save(ctx, Node(node_id="data-2", role="data", index=2, name="cl-1-data-2", instance_id="i-new"))
    await bootstrap_token(ctx, "data-1")
    assert await forget_instances(ctx, {"data-1": "i-old", "data-2": "i-gone"}) == "reset data-1"
    reset, replaced = await members(ctx, ["data-1", "data-2"])
    assert (reset.instance_id, reset.status) == ("", "planned")
    assert replaced.instance_id == "i-new"
    assert await store.get(token_key("cl-1", "data-1")) is None
    assert await forget_instances(ctx, {"data-1": "i-old"}) == "already reset"
