"""Plans as data: which steps each action runs, in which order, for a spec's services."""

from __future__ import annotations

from typing import Any

from pitrix.runtime.operations import ClusterOperations
from pitrix.runtime.plans import create_plan, scale_out_plan, start_plan, stop_plan
from pitrix.runtime.records import Cluster, Job, MetadataCluster
from pitrix.runtime.spec import parse_spec
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


def layers(builder: Any, action: str, args: dict[str, Any] | None = None) -> list[list[str]]:
    cluster = Cluster(
        id="cl-1", name="kv", owner="o", runtime="r", app=parse_spec(APP), counts={"data": 3, "proxy": 1}
    )
    job = Job(id="j-1", cluster_id="cl-1", action=action, args=args or {})
    # Building a plan only binds steps to the operations; nothing here is called.
    ops = ClusterOperations(
        None,  # type: ignore[arg-type]
        cluster,
        job,
        None,  # type: ignore[arg-type]
        MetadataCluster(owner="o", runtime="r", name="m"),
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        sealer=Sealer.generate(),
    )
    return list(builder(cluster, job, ops).describe())


def test_create_runs_post_start_init_after_start() -> None:
    assert layers(create_plan, "create") == [
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
    assert layers(stop_plan, "stop") == [["stop:proxy"], ["stop:data"], ["stop-instances"]]


def test_start_waits_for_agents_before_services() -> None:
    assert layers(start_plan, "start") == [
        ["start-instances"],
        ["wait-running"],
        ["register"],
        ["wait-agents"],
        ["start:data"],
        ["start:proxy"],
        ["converge"],
    ]


def test_scale_out_starts_only_the_added_nodes() -> None:
    plan = layers(scale_out_plan, "scale_out", {"role": "data", "from": 3, "to": 5})
    assert ["start:data"] in plan and ["start:proxy"] not in plan
    assert plan[-3:] == [["scale_out"], ["converge"], ["clear-adding-hosts"]]
