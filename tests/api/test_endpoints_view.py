"""A cluster's endpoints as GET /v1/clusters/{cid} shows them: the port a number or read from the
cluster's values (its default otherwise), and each node's address with it."""

from __future__ import annotations

from typing import Any

from pitrix.api.endpoints import endpoints_view
from pitrix.runtime.params import CLUSTER_SCOPE
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import parse_spec

APP = {
    "name": "kv",
    "version": "1.0",
    "env": {"port": {"type": "integer", "default": 2379}, "admin": {"type": "integer"}},
    "endpoints": {
        "client": {"port": "env.port"},
        "web": {"port": 8080, "protocol": "http"},
        "admin": {"port": "env.admin"},
        "none": {"port": 0},
    },
    "roles": [{"name": "data", "count": 2, "image": "kv"}],
}
NODES: list[dict[str, Any]] = [
    {"node_id": "data-2", "ip": "10.0.0.2", "status": "ready"},
    {"node_id": "data-1", "ip": "10.0.0.1", "status": "ready"},
    {"node_id": "data-3", "ip": "10.0.0.3", "status": "terminated"},
    {"node_id": "data-4", "ip": "", "status": "planned"},
    {"node_id": "data-5", "ip": "10.0.0.10", "status": "ready"},
]


def cluster(env: dict[str, dict[str, str]]) -> Cluster:
    return Cluster(
        id="cl-e1", name="kv", owner="o", runtime="r", app=parse_spec(APP), counts={"data": 2}, env=env
    )


def test_ports_from_numbers_values_and_defaults_with_each_live_node_s_address() -> None:
    shown = endpoints_view(cluster({}), NODES)
    assert shown["client"] == {
        "protocol": "tcp",
        "from": "env.port",
        "port": 2379,
        "addresses": ["10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.10:2379"],
    }
    assert shown["web"]["protocol"] == "http" and shown["web"]["addresses"][0] == "10.0.0.1:8080"
    # no value and no default, or no fixed port: the nodes' addresses without a port
    assert (shown["admin"]["port"], shown["admin"]["addresses"]) == (
        0,
        ["10.0.0.1", "10.0.0.2", "10.0.0.10"],
    )
    assert shown["none"]["port"] == 0


def test_a_value_the_cluster_was_given_wins_over_the_default() -> None:
    shown = endpoints_view(cluster({CLUSTER_SCOPE: {"port": "12379"}}), NODES)
    assert shown["client"]["port"] == 12379
    assert shown["client"]["addresses"][:2] == ["10.0.0.1:12379", "10.0.0.2:12379"]
