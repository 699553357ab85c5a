"""Actions: which steps each plans, in which order, for a spec's services; and the registry."""

from __future__ import annotations

from typing import Any

import pytest

from pitrix.runtime.actions import ACTIONS, BY_NAME, BY_VERB, LIFECYCLE
from pitrix.runtime.records import Cluster, Job, MetadataCluster
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps.context import JobContext
from pitrix.sealing import Sealer

APP = {
    "name": "kv",
    "roles": [
        {
            "name": "data",
            "count": 3,
            "image": "x",
            "services": {
                "init": {"cmd": "init data", "post_start_service": True, "nodes_to_execute_on": 1},
                "start": {"cmd": "start data", "order": 1},
                "stop": {"cmd": "stop data", "order": 1},
            },
            "custom_services": {"compact": {"cmd": "compact data", "timeout": 60}},
        },
        {
            "name": "proxy",
            "count": 1,
            "image": "x",
            "services": {
                "init": {"cmd": "init proxy"},
                "start": {"cmd": "start proxy", "order": 2},
                "stop": {"cmd": "stop proxy", "order": 2},
            },
        },
    ],
}


def layers(
    action: str, args: dict[str, Any] | None = None, app: dict[str, Any] | None = None
) -> list[list[str]]:
    cluster = Cluster(
        id="cl-1",
        name="kv",
        owner="o",
        runtime="r",
        app=parse_spec(app or APP),
        counts={"data": 3, "proxy": 1},
    )
    job = Job(id="j-1", cluster_id="cl-1", action=action, args=args or {})
    # Building a plan only binds steps to the context; nothing here is called.
    ctx = JobContext(
        store=None,  # type: ignore[arg-type]
        cluster=cluster,
        job=job,
        provider=None,  # type: ignore[arg-type]
        metadata=MetadataCluster(owner="o", runtime="r", name="m"),
        metad=None,  # type: ignore[arg-type]
        agents=None,  # type: ignore[arg-type]
        sealer=Sealer.generate(),
        keypairs=None,  # type: ignore[arg-type]
    )
    chosen = BY_NAME[action]
    return list(chosen.plan(ctx, chosen.decode(job.args)).describe())


def test_create_runs_post_start_init_after_start() -> None:
    assert layers("create") == [
        ["plan-nodes"],
        ["run-instances"],
        ["wait-running"],
        ["register"],
        ["wait-agents"],
        ["init:proxy"],
        ["start:data"],
        ["start:proxy"],
        ["init:data:post-start"],
        ["converge"],
    ]


def test_stop_runs_services_in_reverse_order_before_the_instances() -> None:
    assert layers("stop") == [["stop:proxy"], ["stop:data"], ["stop-instances"]]


def test_start_waits_for_agents_before_services() -> None:
    assert layers("start") == [
        ["start-instances"],
        ["wait-running"],
        ["register"],
        ["wait-agents"],
        ["start:data"],
        ["start:proxy"],
        ["converge"],
    ]


def test_scale_out_starts_only_the_added_nodes() -> None:
    plan = layers("scale_out", {"role": "data", "from": 3, "to": 5})
    assert ["start:data"] in plan and ["start:proxy"] not in plan
    assert plan[-3:] == [["scale_out"], ["converge"], ["clear-adding-hosts"]]


def test_a_role_with_a_health_check_is_started_once_healthy() -> None:
    app = {**APP, "roles": [dict(APP["roles"][0], health_check={"cmd": "true"}), APP["roles"][1]]}
    plan = layers("create", app=app)
    assert plan.index(["wait-healthy"]) == plan.index(["start:proxy"]) + 1
    assert plan.index(["wait-healthy"]) < plan.index(["init:data:post-start"])


def test_scale_in_arguments_are_typed_and_stored_with_their_names() -> None:
    args = BY_NAME["scale_in"].decode({"role": "data", "from": 3, "to": 1})
    assert (args.role, args.old, args.new) == ("data", 3, 1)  # type: ignore[attr-defined]
    assert args.stored() == {"role": "data", "from": 3, "to": 1, "nodes": []}
    plan = layers("scale_in", {"role": "data", "from": 3, "to": 1})
    assert plan[0] == ["mark-leaving"] and ["terminate"] in plan


def test_the_registry_derives_the_lifecycle_and_the_verbs() -> None:
    assert {a.name for a in ACTIONS} == set(LIFECYCLE.edges)
    assert set(BY_VERB) == {
        "stop",
        "start",
        "scale",
        "env",
        "recover",
        "service",
        "restart",
        "upgrade",
        "backup",
        "links",
        "resize",
    }
    assert BY_VERB["scale"].name == "scale_out"  # it chooses scale_in itself when the count drops
    assert sorted(LIFECYCLE.transitional) == sorted(a.running for a in ACTIONS)


@pytest.mark.parametrize("action", [a.name for a in ACTIONS])
def test_every_action_plans_from_its_stored_arguments(action: str) -> None:
    args = {
        "scale_out": {"role": "data", "from": 3, "to": 4},
        "scale_in": {"role": "data", "from": 3, "to": 2},
        "update_env": {"env": {"data": {}}, "previous": {"data": {}}},
        "recover": {"nodes": {"data-2": "i-2"}},
        "service": {"name": "compact", "params": {"data": {}}, "nodes": ["data-1", "data-3"]},
        "restart": {"nodes": {"data": ["data-1"]}},
        "upgrade": {"version": "2", "app": {**APP, "version": "2"}, "env": {}},
        "backup": {"backup_id": "bk-1", "nodes": ["data-1"], "params": {"data": {}}},
        "relink": {"links": {"peer": "cl-2"}, "before": {}},
        "resize": {"targets": {"data": RESIZED}, "nodes": {"data": ["data-1"]}},
    }.get(action, {})
    assert layers(action, args, BACKUP_APP if action == "backup" else None)


# backup: the data role's volumes, a dump first, hooks around the snapshots (one step: post after pre)
BACKUP_APP = {
    **APP,
    "roles": [{**APP["roles"][0], "volume": {"size": 1}}, APP["roles"][1]],
    "backup": {"backup": {"cmd": "dump"}, "pre": {"cmd": "freeze"}, "post": {"cmd": "thaw"}},
}


def test_a_backup_records_dumps_then_snapshots_between_its_hooks() -> None:
    args = {"backup_id": "bk-1", "nodes": ["data-1", "data-2"], "params": {"data": {}}}
    assert layers("backup", args, BACKUP_APP) == [
        ["record-backup"],
        ["backup-command"],
        ["snapshots"],
        ["complete-backup"],
    ]


def test_restart_goes_batch_by_batch_each_gated_on_health() -> None:
    """The restart service's max_in_flight sizes a role's batches, each followed by its health
    gate (roles with a check); a role without a restart service stops then starts, no gate."""
    data = dict(
        APP["roles"][0],
        health_check={"cmd": "true"},
        services={**APP["roles"][0]["services"], "restart": {"cmd": "restart data", "max_in_flight": 2}},
    )
    app = {**APP, "roles": [data, APP["roles"][1]]}
    plan = layers("restart", {"nodes": {"data": ["data-1", "data-2", "data-3"], "proxy": ["proxy-1"]}}, app)
    assert plan == [
        ["restart:data:batch-1"],
        ["healthy:data:batch-1"],
        ["restart:data:batch-2"],
        ["healthy:data:batch-2"],
        ["restart:proxy:batch-1"],
    ]


RESIZED = {"cpu": 2, "memory": 2048, "instance_type": "", "instance_changes": True, "volume_grows": False}


def test_resize_goes_batch_by_batch_in_vertical_scaling_max_in_flight_and_records_each_role() -> None:
    data = dict(APP["roles"][0], health_check={"cmd": "true"}, vertical_scaling={"max_in_flight": 2})
    app = {**APP, "roles": [data, APP["roles"][1]]}
    args = {
        "targets": {"data": RESIZED, "proxy": RESIZED},
        "nodes": {"data": ["data-1", "data-2", "data-3"], "proxy": ["proxy-1"]},
    }
    assert layers("resize", args, app) == [
        ["resize:data:batch-1"],
        ["healthy:data:batch-1"],
        ["resize:data:batch-2"],
        ["healthy:data:batch-2"],
        ["record:data"],
        ["resize:proxy:batch-1"],
        ["record:proxy"],
    ]


def test_every_verb_is_documented_from_its_action() -> None:
    from pitrix.api.openapi import openapi_document

    paths = openapi_document()["paths"]
    for verb, action in BY_VERB.items():
        operation = paths[f"/v1/clusters/{{cid}}/{verb}"]["post"]
        assert operation["summary"] == action.summary and action.summary
        assert ("requestBody" in operation) == (action.request_schema is not None)
