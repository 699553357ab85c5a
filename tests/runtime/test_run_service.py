"""The ``service`` action: the spec's custom services, and how a request is judged (over a real etcd).

Each refusal names the field; what is accepted fixes the nodes and each role's parameters (the
defaults filled in, a password sealed for its cluster, role, service and key) in the job.
"""

from __future__ import annotations

from typing import Any

import pytest

from pitrix.runtime.actions import BY_VERB
from pitrix.runtime.actions.base import Desk, InvalidRequest
from pitrix.runtime.actions.run_service import ServiceArgs
from pitrix.runtime.keys import node_key
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.repository import Repository
from pitrix.runtime.secret_env import custom_services_view, service_param_context
from pitrix.runtime.spec import SpecError, parse_spec
from pitrix.runtime.steps.custom import hide
from pitrix.runtime.steps.services import command_line
from pitrix.sealing import REDACTED, Sealer, is_sealed
from pitrix.store import Store

SERVICES = {
    "backup": {
        "cmd": "backup",
        "description": "copy the data away",
        "params": {
            "target": {"type": "string", "default": "/backup", "description": "where to"},
            "level": {"type": "integer", "default": 1, "min": 1, "max": 9},
            "mode": {"type": "string", "range": ["full", "diff"], "default": "full"},
            "key": {"type": "password"},
        },
    },
    "compact": {"cmd": "compact", "nodes_to_execute_on": 1},
}
APP = {
    "name": "kv",
    "roles": [
        {"name": "data", "count": 3, "image": "x", "custom_services": SERVICES},
        {"name": "proxy", "count": 2, "image": "x", "custom_services": {"backup": {"cmd": "backup-proxy"}}},
        {"name": "tool", "count": 1, "image": "x"},
    ],
}


def cluster() -> Cluster:
    return Cluster(
        id="cl-s1",
        name="kv",
        owner="o",
        runtime="r",
        app=parse_spec(APP),
        counts={"data": 3, "proxy": 2, "tool": 1},
        state="active",
    )


@pytest.fixture
async def desk(store: Store, sealer: Sealer) -> Desk:
    for role, count in (("data", 3), ("proxy", 2), ("tool", 1)):
        for index in range(1, count + 1):
            node = Node(
                node_id=f"{role}-{index}",
                role=role,
                index=index,
                name=f"cl-s1-{role}-{index}",
                instance_id=f"i-{role}{index}",
                status="ready",
            )
            await store.put(node_key("cl-s1", node.node_id), node.dump())
    return Desk(Repository(store, sealer), None, sealer)  # type: ignore[arg-type]


async def accept(desk: Desk, body: dict[str, Any]) -> ServiceArgs:
    accepted = await BY_VERB["service"].accept(desk, cluster(), body)
    assert isinstance(accepted.args, ServiceArgs)
    return accepted.args


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "name: required"),
        ({"name": 3}, "name: required"),
        ({"name": "restore"}, "name: the app has no custom service 'restore' (has backup, compact)"),
        ({"name": "backup", "colour": 1}, "colour: unknown field"),
        ({"name": "backup", "params": []}, "params: expected an object"),
        ({"name": "backup", "params": {"speed": 1}}, "params.speed: 'backup' has no parameter 'speed'"),
        ({"name": "backup", "params": {"level": 10}}, "params.level: 10 is above the maximum 9"),
        ({"name": "backup", "params": {"level": "high"}}, "params.level: expected an integer"),
        ({"name": "backup", "params": {"mode": "half"}}, "params.mode: 'half' is not one of full, diff"),
        ({"name": "backup", "params": {"target": ["a"]}}, "params.target: expected a string"),
        ({"name": "backup", "roles": "data"}, "roles: must be a non-empty list"),
        ({"name": "backup", "roles": ["db"]}, "roles: the app has no role 'db'"),
        ({"name": "compact", "roles": ["proxy"]}, "roles: role 'proxy' has no custom service 'compact'"),
        ({"name": "backup", "nodes": []}, "nodes: must be a non-empty list"),
        ({"name": "backup", "nodes": ["data-7"]}, "nodes: the cluster has no running node 'data-7'"),
        ({"name": "backup", "nodes": ["tool-1"]}, "nodes: tool-1 is of role tool, which does not run"),
        ({"name": "backup", "roles": ["proxy"], "nodes": ["data-1"]}, "nodes: data-1 is of role data"),
    ],
)
async def test_bad_requests_are_refused_naming_the_field(
    desk: Desk, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await accept(desk, body)
    assert str(caught.value).startswith(message), str(caught.value)


async def test_a_bad_password_is_never_quoted(desk: Desk) -> None:
    app = {**APP, "roles": [{**APP["roles"][0], "custom_services": {"s": {"cmd": "x", "params": {
        "pw": {"type": "password", "range": ["alpha", "beta"]}}}}}]}  # fmt: skip
    bad = cluster().model_copy(update={"app": parse_spec(app)})
    with pytest.raises(InvalidRequest) as caught:
        await BY_VERB["service"].accept(desk, bad, {"name": "s", "params": {"pw": "gamma-secret"}})
    assert str(caught.value) == "params.pw: not an allowed value"


async def test_defaults_fill_in_per_role_and_a_password_is_sealed(desk: Desk, sealer: Sealer) -> None:
    args = await accept(desk, {"name": "backup", "params": {"level": 5, "key": "k-123"}})
    # every node of both roles offering it; proxy declares no parameters, so gets none
    assert args.nodes == ["data-1", "data-2", "data-3", "proxy-1", "proxy-2"]
    assert set(args.params) == {"data", "proxy"} and args.params["proxy"] == {}
    data = args.params["data"]
    assert {k: v for k, v in data.items() if k != "key"} == {
        "target": "/backup",
        "level": "5",
        "mode": "full",
    }
    assert is_sealed(data["key"])
    assert sealer.open_text(data["key"], service_param_context("cl-s1", "data", "backup", "key")) == "k-123"
    assert "k-123" not in str(args.stored())


async def test_nodes_to_execute_on_and_chosen_nodes(desk: Desk) -> None:
    assert (await accept(desk, {"name": "compact"})).nodes == ["data-1"]
    args = await accept(desk, {"name": "backup", "roles": ["proxy"]})
    assert (args.nodes, list(args.params)) == (["proxy-1", "proxy-2"], ["proxy"])
    args = await accept(desk, {"name": "compact", "nodes": ["data-3", "data-2", "data-3"]})
    assert args.nodes == ["data-2", "data-3"]  # named nodes win over nodes_to_execute_on
    # a parameter only the roles not chosen declare is not one this run has
    with pytest.raises(InvalidRequest, match=r"params\.level: 'backup' has no parameter"):
        await accept(desk, {"name": "backup", "nodes": ["proxy-1"], "params": {"level": 2}})


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ({"start": {"cmd": "x"}}, "'start' is a lifecycle service"),
        ({"Fail-Over": {"cmd": "x"}}, "'Fail-Over' is not a service name"),
        ({"ok": {"cmd": ""}}, "custom_services.ok.cmd"),
        ({"ok": {"cmd": "x", "params": {"a-b": 1}}}, "'a-b' is not a parameter name"),
        ({"ok": {"cmd": "x", "params": {"PATH": "/bin"}}}, "'PATH' is reserved"),
        ({"ok": {"cmd": "x", "params": {"LD_PRELOAD": "x"}}}, "'LD_PRELOAD' is reserved"),
        ({"ok": {"cmd": "x", "params": {"pw": {"type": "password", "default": "x"}}}}, "has no default"),
        (
            {"ok": {"cmd": "x", "params": {"n": {"type": "integer", "default": 0, "min": 1}}}},
            "below the minimum",
        ),
        ({"ok": {"cmd": "x", "timeout": 0}}, "custom_services.ok.timeout"),
        ({"ok": {"cmd": "x", "nodes_to_execute_on": 0}}, "custom_services.ok.nodes_to_execute_on"),
    ],
)
def test_bad_custom_services_are_refused_in_the_spec(services: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec({"name": "a", "roles": [{"name": "r", "image": "x", "custom_services": services}]})


def test_the_spec_shorthand_and_the_view() -> None:
    spec = parse_spec(
        {
            "name": "a",
            "roles": [
                {"name": "r", "image": "x", "custom_services": {"s": {"cmd": "x", "params": {"n": 3}}}}
            ],
        }
    )
    assert spec.roles[0].custom_services["s"].params["n"].type == "integer"
    view = custom_services_view(cluster())
    assert (
        view["backup"]["roles"] == ["data", "proxy"] and view["backup"]["description"] == "copy the data away"
    )
    assert view["backup"]["params"]["level"] == {
        "type": "integer", "default": 1, "range": None, "min": 1.0, "max": 9.0, "description": "",
        "pattern": None, "required": False, "multichoice": False,
    }  # fmt: skip
    assert view["compact"] == {"roles": ["data"], "description": "", "params": {}}


def test_parameters_reach_the_command_shell_quoted() -> None:
    line = command_line('echo "$A"', {"B": "it's $HOME; rm -rf /", "A": "1"})
    assert line == "export A=1 B='it'\"'\"'s $HOME; rm -rf /'\necho \"$A\""
    assert command_line("x", {}) == "x"
    assert hide("pw is hunter2, hunter22", ["hunter2", "hunter22"]) == f"pw is {REDACTED}, {REDACTED}"
