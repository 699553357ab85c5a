"""What the spec now allows for AppCenter's packages works where it is used: role names with ``_``,
parameter names such as ``4lw.commands.whitelist``, endpoint ports from a parameter or 0."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from pitrix.cli.main import _cluster_table, _deploy_env
from pitrix.runtime.actions.phases import role_of
from pitrix.runtime.endpoints import port_of, resolved
from pitrix.runtime.params import CLUSTER_SCOPE, ParamError, deploy_env, effective, scoped
from pitrix.runtime.spec import SpecError, parse_spec
from pitrix.runtime.steps.nodes import split_id
from pitrix.runtime.steps.services import command_line

SPEC: dict[str, Any] = {
    "name": "keeper",
    "profile": "appcenter",
    "roles": [
        {
            "name": "etcd_node",
            "count": 3,
            "image": "img-1",
            "env": {"quota.backend.bytes": {"type": "integer", "default": 2048}, "client-port": 2379},
        },
        {"name": "etcd_proxy", "image": "img-1", "env": {"proxy.port": {"type": "integer", "default": 0}}},
    ],
    "env": {
        "4lw.commands.whitelist": "srvr,mntr",
        "web.console.enabled": {"type": "boolean", "default": True},
        "-p": "x",
        "tickTime": 2000,
    },
    "endpoints": {
        "client": {"port": "env.client-port"},
        "proxy": {"port": "env.proxy.port", "protocol": "http"},
        "words": {"port": "env.4lw.commands.whitelist"},
        "peer": {"port": 0},
        "admin": {"port": 8080},
    },
}


def test_role_names_with_underscores_parse_and_split_from_node_ids() -> None:
    spec = parse_spec(SPEC)
    assert [r.name for r in spec.roles] == ["etcd_node", "etcd_proxy"]
    assert role_of("etcd_node-12") == "etcd_node"
    assert split_id("etcd_node-12") == ("etcd_node", 12)
    with pytest.raises(SpecError, match=r"roles\.0\.name"):
        parse_spec({**SPEC, "roles": [{"name": "_lead", "image": "img-1"}]})


def test_env_of_a_role_with_underscores_and_dotted_keys_is_given_and_checked() -> None:
    app = parse_spec(SPEC)
    env = deploy_env(app, {"etcd_node": {"quota.backend.bytes": 4096}, "4lw.commands.whitelist": "ruok"})
    assert env == {
        "etcd_node": {"quota.backend.bytes": "4096"},
        CLUSTER_SCOPE: {"4lw.commands.whitelist": "ruok"},
    }
    seen = effective(app, env, "etcd_node")
    assert seen["4lw.commands.whitelist"] == "ruok" and seen["-p"] == "x" and seen["client-port"] == "2379"
    with pytest.raises(ParamError, match=r"^env\.etcd_node\.quota\.backend\.bytes: "):
        deploy_env(app, {"etcd_node": {"quota.backend.bytes": "lots"}})


def test_cli_env_flags_reach_roles_with_underscores_and_dotted_cluster_keys() -> None:
    app = parse_spec(SPEC)
    given = _deploy_env(None, ["etcd_node.quota.backend.bytes=1", "web.console.enabled=false", "tickTime=10"])
    # The CLI splits at the first dot; the service folds a dotted cluster-level key back together.
    assert given == {
        "etcd_node": {"quota.backend.bytes": "1"},
        "web": {"console.enabled": "false"},
        "tickTime": "10",
    }
    assert scoped(app, given) == {
        "etcd_node": {"quota.backend.bytes": "1"},
        CLUSTER_SCOPE: {"web.console.enabled": "false", "tickTime": "10"},
    }
    with pytest.raises(ParamError, match=r"^env\.web: the app has no role 'web'"):
        scoped(app, {"web": {"console.missing": "1"}})


def test_only_shell_variables_are_exported_to_a_command() -> None:
    line = command_line('echo "$ok_1|${#}"', {"ok_1": "a b", "node.ip": "10.0.0.1", "-p": "x", "4lw": "y"})
    assert line == "export ok_1='a b'\necho \"$ok_1|${#}\""
    assert command_line("true", {"node.ip": "1"}) == "true"
    # The line runs: a name like node.ip in the export would fail the whole command.
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True)
    assert done.stdout == "a b|0\n"


def test_json_arg_service_params_keep_appcenter_names_env_ones_stay_shell_variables() -> None:
    service = {"cmd": "repair", "params_style": "json_arg", "params": {"node.ip": "", "unhealthy-node": ""}}
    role = {"name": "etcd_node", "image": "img-1", "custom_services": {"repair": service}}
    spec = parse_spec({"name": "keeper", "roles": [role]})
    assert set(spec.roles[0].custom_services["repair"].params) == {"node.ip", "unhealthy-node"}
    as_env = {**service, "params_style": "env"}
    with pytest.raises(SpecError, match=r"params\.node\.ip: 'node\.ip' is not a parameter name"):
        parse_spec({"name": "keeper", "roles": [{**role, "custom_services": {"repair": as_env}}]})


def test_endpoint_ports_from_parameters_resolve_to_numbers() -> None:
    app = parse_spec(SPEC)
    assert resolved(app, {}) == {
        "client": {"port": 2379, "protocol": "tcp", "from": "env.client-port"},
        "proxy": {"port": 0, "protocol": "http", "from": "env.proxy.port"},
        "words": {"port": 0, "protocol": "tcp", "from": "env.4lw.commands.whitelist"},  # not a number
        "peer": {"port": 0, "protocol": "tcp"},
        "admin": {"port": 8080, "protocol": "tcp"},
    }
    env = deploy_env(app, {"etcd_node": {"client-port": 12379}, "etcd_proxy": {"proxy.port": 99999}})
    assert port_of(app, env, "env.client-port") == 12379
    assert port_of(app, env, "env.proxy.port") == 0  # out of range: no port
    with pytest.raises(SpecError, match=r"endpoints\.x\.port: no parameter named 'nope'"):
        parse_spec({**SPEC, "endpoints": {"x": {"port": "env.nope"}}})


def test_cluster_show_lists_endpoints_with_their_parameters() -> None:
    app = parse_spec(SPEC)
    shown = {
        "id": "cl-1",
        "name": "k",
        "app": {"name": "keeper", "version": "0.1.0"},
        "state": "active",
        "runtime": "sim",
        "owner": "alice",
        "endpoints": resolved(app, {}),
    }
    lines = _cluster_table(shown).splitlines()
    at = lines.index("  endpoints:")
    assert lines[at + 1 : at + 6] == [
        "    admin   tcp   port 8080",
        "    client  tcp   port 2379   (env.client-port)",
        "    peer    tcp   none fixed",
        "    proxy   http  none fixed  (env.proxy.port)",
        "    words   tcp   none fixed  (env.4lw.commands.whitelist)",
    ]
