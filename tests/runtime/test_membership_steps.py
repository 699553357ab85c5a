"""Membership planning: node ids with gaps, leavers, orderings, published output, and the plans
of scale and recover with their hooks (pure, or against a real etcd for the node records)."""

from __future__ import annotations

from typing import Any

import pytest

from pitrix.runtime.actions import BY_NAME, BY_VERB
from pitrix.runtime.actions.base import Desk, InvalidRequest
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.records import Cluster, Job, MetadataCluster
from pitrix.runtime.repository import Repository
from pitrix.runtime.spec import SpecError, parse_spec
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.membership import choose_leavers
from pitrix.runtime.steps.nodes import free_ids, node_ids, plan_node_ids, sort_ids, split_id
from pitrix.runtime.steps.ordering import apply_order
from pitrix.runtime.steps.published import merge, parse_output
from pitrix.sealing import Sealer
from pitrix.store import Store

HOOK = {"cmd": "true"}
APP: dict[str, Any] = {
    "name": "kv",
    "roles": [
        {
            "name": "etcd",
            "count": 3,
            "image": "x",
            "services": {
                "start": {"cmd": "start"},
                "pre_scale_out": {"cmd": "member add", "publish": True, "nodes_to_execute_on": 1},
                "scale_out": HOOK,
                "scale_in": {"cmd": "member remove", "pre_check": "quorum-ok"},
            },
        },
        {"name": "my-proxy", "count": 1, "image": "x", "services": {"start": HOOK}},
    ],
}


def make_cluster(app: dict[str, Any] | None = None, counts: dict[str, int] | None = None) -> Cluster:
    return Cluster(
        id="cl-1",
        name="kv",
        owner="o",
        runtime="r",
        app=parse_spec(app or APP),
        counts=counts or {"etcd": 3, "my-proxy": 1},
    )


def context(
    action: str = "create",
    args: dict[str, Any] | None = None,
    *,
    ids: list[str] | None = None,
    store: Store | None = None,
    app: dict[str, Any] | None = None,
) -> JobContext:
    sealer = Sealer.generate()
    return JobContext(
        store=store,  # type: ignore[arg-type]
        cluster=make_cluster(app),
        job=Job(id="j-1", cluster_id="cl-1", action=action, args=args or {}),
        provider=None,  # type: ignore[arg-type]
        metadata=MetadataCluster(owner="o", runtime="r", name="m"),
        metad=None,  # type: ignore[arg-type]
        agents=None,  # type: ignore[arg-type]
        sealer=sealer,
        keypairs=KeyPairs(store, sealer),  # type: ignore[arg-type]
        node_ids=ids,
    )


def plan(action: str, args: dict[str, Any], ids: list[str], app: dict[str, Any] | None = None) -> list[str]:
    ctx = context(action, args, ids=ids, app=app)
    chosen = BY_NAME[action]
    return [" + ".join(layer) for layer in chosen.plan(ctx, chosen.decode(args)).describe()]


# -- ids ------------------------------------------------------------------------------------------


def test_new_nodes_take_the_lowest_free_indexes_of_their_role() -> None:
    assert free_ids("etcd", ["etcd-1", "etcd-3", "etcd-4", "my-proxy-2"], 3) == ["etcd-2", "etcd-5", "etcd-6"]
    assert free_ids("my-proxy", ["etcd-1", "my-proxy-2"], 2) == ["my-proxy-1", "my-proxy-3"]
    assert free_ids("etcd", [], 2) == ["etcd-1", "etcd-2"]
    assert split_id("my-proxy-12") == ("my-proxy", 12)


def test_node_ids_come_from_the_records_in_spec_order_then_by_index() -> None:
    records = ["my-proxy-1", "etcd-10", "etcd-9", "etcd-1"]
    assert node_ids(context(ids=records)) == ["etcd-1", "etcd-9", "etcd-10", "my-proxy-1"]
    assert sort_ids(make_cluster(), ["etcd-2", "etcd-1"]) == ["etcd-1", "etcd-2"]
    # A context made without records (create) falls back to the contiguous ids of the counts.
    assert node_ids(context()) == ["etcd-1", "etcd-2", "etcd-3", "my-proxy-1"]


def test_plans_after_a_targeted_scale_in_name_the_nodes_that_exist() -> None:
    ids = ["etcd-1", "etcd-3", "etcd-4", "my-proxy-1"]
    assert plan("stop", {}, ids)[-1] == "stop-instances"
    ctx = context("stop", ids=ids)
    stop = BY_NAME["stop"].plan(ctx, BY_NAME["stop"].decode({}))
    assert [s.name for s in stop.steps] == ["stop-instances"]  # no role here has a stop service
    # A scale-out whose accept chose etcd-2 boots etcd-2 and runs the hooks on the others.
    steps = plan("scale_out", {"role": "etcd", "from": 3, "to": 4, "nodes": ["etcd-2"]}, ids)
    assert steps == [
        "plan-nodes",
        "run-instances",
        "wait-running",
        "register",
        "wait-agents",
        "pre_scale_out",
        "start:etcd+my-proxy",
        "scale_out",
        "converge",
        "clear-adding-hosts",
    ]


def test_scale_in_asks_its_pre_check_first_and_chooses_its_leavers_while_it_runs() -> None:
    steps = plan("scale_in", {"role": "etcd", "from": 3, "to": 2}, ["etcd-1", "etcd-2", "etcd-3"])
    assert steps == [
        "pre-check",
        "mark-leaving",
        "scale_in",
        "stop-leaving",
        "destroy-leaving",
        "unregister",
        "terminate",
        "converge",
        "clear-deleting-hosts",
    ]
    plain = {**APP, "roles": [{"name": "etcd", "image": "x"}, APP["roles"][1]]}
    assert "pre-check" not in plan("scale_in", {"role": "etcd", "from": 3, "to": 2}, ["etcd-1"], plain)
    assert "pre_scale_out" not in plan("scale_out", {"role": "etcd", "from": 1, "to": 2}, ["etcd-1"], plain)


def test_recover_lets_the_dead_go_before_its_replacement_joins() -> None:
    steps = plan("recover", {"nodes": {"etcd-2": "i-dead"}}, ["etcd-1", "etcd-2", "etcd-3", "my-proxy-1"])
    assert steps == [
        "mark-replaced",
        "scale_in",
        "unregister-old",
        "terminate-old",
        "forget-old",
        "run-instances",
        "wait-running",
        "register",
        "wait-agents",
        "pre_scale_out",
        "start:etcd+my-proxy",
        "scale_out",
        "converge",
        "clear-adding-hosts + clear-deleting-hosts",
    ]


# -- orderings ------------------------------------------------------------------------------------


def test_an_ordering_puts_unlisted_nodes_first_and_ignores_strangers() -> None:
    ids = ["etcd-1", "etcd-2", "etcd-3", "etcd-4"]
    assert apply_order(ids, "etcd-3\netcd-1\netcd-2\netcd-4\n") == ["etcd-3", "etcd-1", "etcd-2", "etcd-4"]
    # etcd-4 is unknown to the app: it goes first; blank lines and another role's node are ignored.
    assert apply_order(ids, "\n  etcd-2 \nmy-proxy-1\netcd-1\netcd-3\netcd-2\n") == [
        "etcd-4",
        "etcd-2",
        "etcd-1",
        "etcd-3",
    ]


def test_the_spec_takes_the_members_fields_and_keeps_pre_check_to_scaling() -> None:
    spec = parse_spec({**APP, "roles": [{**APP["roles"][0], "ordering": "etcdctl-order"}]})
    role = spec.role("etcd")
    assert role.ordering == "etcdctl-order"
    assert role.services["pre_scale_out"].publish and role.services["scale_in"].pre_check == "quorum-ok"
    bad = {"name": "etcd", "image": "x", "services": {"start": {"cmd": "s", "pre_check": "x"}}}
    with pytest.raises(
        SpecError, match=r"roles\.0\.services: .*start\.pre_check: only scale_out and scale_in"
    ):
        parse_spec({"name": "kv", "roles": [bad]})


# -- published ------------------------------------------------------------------------------------


def test_published_output_must_be_one_small_json_object() -> None:
    assert parse_output("pre_scale_out", "etcd-1", ' {"a": "1", "m": {"x": 2}}\n') == {
        "a": "1",
        "m": {"x": 2},
    }
    cases = [
        ("adding member...\n{}", "its output is not JSON"),
        ('["a"]', "printed a JSON list, not an object"),
        ("", "printed nothing"),
        ('{"a/b": 1}', "not a metadata path segment"),
        ('{"m": {"": 1}}', "not a metadata path segment"),
        ('{"a": "' + "x" * 5000 + '"}', "only the last 4096 are kept"),
    ]
    for output, message in cases:
        with pytest.raises(OperationError, match=message) as caught:
            parse_output("pre_scale_out", "etcd-1", output)
        assert "pre_scale_out on etcd-1 (publish: true)" in str(caught.value)


def test_published_objects_merge_by_key_and_must_agree() -> None:
    merged = merge("scale_out", [("etcd-1", {"a": "1", "n1": "x"}), ("etcd-2", {"a": "1", "n2": None})])
    assert merged == {"a": "1", "n1": "x", "n2": None}
    with pytest.raises(OperationError, match="etcd-1 and etcd-3 printed different values for 'a'"):
        merge("scale_out", [("etcd-1", {"a": "1"}), ("etcd-2", {}), ("etcd-3", {"a": "2"})])


# -- against etcd: accepting a scale, choosing leavers --------------------------------------------


async def test_a_scale_request_names_its_nodes_or_is_refused_naming_the_field(store: Store) -> None:
    sealer = Sealer.generate()
    ctx = context(store=store)
    await plan_node_ids(ctx, ["etcd-1", "etcd-3", "etcd-4", "my-proxy-1"])
    desk = Desk(Repository(store, sealer), None, sealer)  # type: ignore[arg-type]
    cluster = make_cluster()
    scale = BY_VERB["scale"]

    async def accept(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        accepted = await scale.accept(desk, cluster, body)
        return accepted.action.name, accepted.args.stored()

    # Scaling out fills the gap first.
    assert await accept({"role": "etcd", "count": 5}) == (
        "scale_out",
        {"role": "etcd", "from": 3, "to": 5, "nodes": ["etcd-2", "etcd-5"]},
    )
    assert await accept({"role": "etcd", "nodes": ["etcd-3"]}) == (
        "scale_in",
        {"role": "etcd", "from": 3, "to": 2, "nodes": ["etcd-3"]},
    )
    assert await accept({"role": "etcd", "nodes": ["etcd-1", "etcd-4"], "count": 1}) == (
        "scale_in",
        {"role": "etcd", "from": 3, "to": 1, "nodes": ["etcd-1", "etcd-4"]},
    )
    assert (await accept({"role": "etcd", "count": 1}))[1]["nodes"] == []  # chosen while it runs
    refusals = [
        ({"role": "etcd", "nodes": "etcd-1"}, "nodes: a non-empty list"),
        ({"role": "etcd", "nodes": []}, "nodes: a non-empty list"),
        (
            {"role": "etcd", "nodes": ["etcd-2"]},
            "nodes: role etcd has no node 'etcd-2' .has etcd-1, etcd-3, etcd-4.",
        ),
        ({"role": "etcd", "nodes": ["my-proxy-1"]}, "nodes: role etcd has no node 'my-proxy-1'"),
        ({"role": "etcd", "nodes": ["etcd-1", "etcd-1"]}, "nodes: names etcd-1 twice"),
        ({"role": "etcd", "nodes": ["etcd-1"], "count": 1}, "nodes: 1 of 3 leaving leaves 2, not count 1"),
        ({"role": "etcd", "nodes": ["etcd-1"], "count": 4}, "nodes: 1 of 3 leaving leaves 2, not count 4"),
        ({"role": "etcd"}, "count: required .unless nodes is given."),
        ({"role": "etcd", "count": 3}, "count: role etcd already has 3 nodes"),
        ({"role": "db", "count": 3}, "role: cluster cl-1 has no role 'db'"),
    ]
    for body, message in refusals:
        with pytest.raises(InvalidRequest, match=message):
            await accept(body)


async def test_leavers_are_those_named_else_the_highest_indexes(store: Store) -> None:
    ctx = context(store=store)
    await plan_node_ids(ctx, ["etcd-1", "etcd-2", "etcd-9", "etcd-10", "my-proxy-1"])
    assert await choose_leavers(ctx, "etcd", 2, []) == ["etcd-9", "etcd-10"]  # by index, not text
    assert await choose_leavers(ctx, "etcd", 1, ["etcd-1"]) == ["etcd-1"]
    with pytest.raises(OperationError, match="role etcd has 4 nodes; 5 cannot leave"):
        await choose_leavers(ctx, "etcd", 5, [])
