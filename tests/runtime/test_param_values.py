"""Parameter constraints and deploy-time values: what a create or env request may give, and where
each value lands (a role's own key over a cluster-level one)."""

from __future__ import annotations

from typing import Any

import pytest

from pitrix.runtime import params
from pitrix.runtime.params import CLUSTER_SCOPE, ParamError
from pitrix.runtime.records import Cluster
from pitrix.runtime.secret_env import env_view, open_cluster, seal_passwords
from pitrix.runtime.spec import EnvParam, SpecError, parse_spec
from pitrix.sealing import REDACTED, Sealer, is_sealed

SECRET = "s3cret-Pw-91f0"


def app(**extra: Any) -> dict[str, Any]:
    return {
        "name": "shop",
        "env": {
            "log_level": {"type": "string", "range": ["info", "debug"], "default": "info"},
            "admin_password": {"type": "password", "required": True, "pattern": "[A-Za-z0-9-]{8,}"},
            "port": 7000,
        },
        "roles": [
            {
                "name": "web",
                "image": "img",
                "env": {
                    "port": {"type": "integer", "min": 1, "max": 65535, "default": 80},
                    "node_name": {"type": "string", "pattern": "[a-z][a-z0-9-]*", "required": True},
                    "features": {"type": "string", "multichoice": True, "range": ["gzip", "tls", "http2"]},
                    "cluster_token": {"type": "string", "changeable": False},
                },
            },
            {"name": "db", "image": "img"},
        ],
        **extra,
    }


def test_pattern_must_match_the_whole_value() -> None:
    param = EnvParam(type="string", pattern="[a-z]+")
    assert param.check("abc") == "abc"
    with pytest.raises(ValueError, match=r"'abc1' does not match the pattern \[a-z\]\+"):
        param.check("abc1")  # a search would find "abc"; the whole value must match


def test_a_password_that_misses_its_pattern_is_never_quoted() -> None:
    param = EnvParam(type="password", pattern="[0-9]{6}")
    with pytest.raises(ValueError) as caught:
        param.check("hunter2")
    assert "hunter2" not in str(caught.value) and "does not match" in str(caught.value)


def test_multichoice_takes_a_subset_of_range() -> None:
    param = EnvParam(type="string", multichoice=True, range=["gzip", "tls", "http2"])
    assert param.check("tls, gzip") == "tls,gzip"
    assert param.check("") == ""
    with pytest.raises(ValueError, match="'brotli' is not one of gzip, tls, http2"):
        param.check("gzip,brotli")
    with pytest.raises(ValueError, match="'tls' is chosen twice"):
        param.check("tls,tls")


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ({"type": "string", "multichoice": True}, "multichoice needs type string and a range"),
        ({"type": "integer", "multichoice": True, "range": [1, 2]}, "multichoice needs type string"),
        ({"type": "string", "pattern": "(unclosed"}, "pattern is not a regular expression"),
        ({"type": "string", "pattern": "[a-z]+", "default": "ABC"}, "does not match the pattern"),
        ({"type": "string", "multichoice": True, "range": ["a"], "default": "a,b"}, "'b' is not one of a"),
    ],
)
def test_bad_constraints_are_refused_with_the_spec(param: dict[str, Any], message: str) -> None:
    spec = app()
    spec["roles"][0]["env"]["bad"] = param
    with pytest.raises(SpecError, match=message) as caught:
        parse_spec(spec)
    assert "roles.0.env.bad" in str(caught.value)


def test_a_cluster_level_key_named_like_a_role_is_refused() -> None:
    spec = app()
    spec["env"]["db"] = "x"
    with pytest.raises(SpecError, match=r"env\.db: a cluster-level parameter cannot have a role's name"):
        parse_spec(spec)


def test_cluster_level_params_take_the_shorthand_and_key_rules() -> None:
    spec = parse_spec(app())
    assert spec.env["port"].type == "integer" and spec.env["port"].default == 7000
    bad = app()
    bad["env"]["no spaces"] = 1
    with pytest.raises(SpecError, match="'no spaces' is not a parameter name"):
        parse_spec(bad)


def test_deploy_env_checks_every_value_and_names_its_field() -> None:
    spec = parse_spec(app())
    given = {
        "web": {"port": "8080", "node_name": "web-a", "features": "gzip", "cluster_token": "t1"},
        "admin_password": SECRET,
        "log_level": "debug",
    }
    assert params.deploy_env(spec, given) == {
        "web": {"port": "8080", "node_name": "web-a", "features": "gzip", "cluster_token": "t1"},
        CLUSTER_SCOPE: {"admin_password": SECRET, "log_level": "debug"},
    }


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"web": {"port": 70000}}, "env.web.port: 70000 is above the maximum 65535"),
        ({"web": {"port": "eighty"}}, "env.web.port: expected an integer, got 'eighty'"),
        ({"web": {"node_name": "Web_A"}}, "env.web.node_name: 'Web_A' does not match the pattern"),
        ({"web": {"features": "gzip,zstd"}}, "env.web.features: 'zstd' is not one of gzip, tls, http2"),
        ({"web": {"nope": 1}}, "env.web.nope: role web has no parameter 'nope'"),
        ({"cache": {"x": 1}}, "env.cache: the app has no role 'cache'"),
        ({"log_level": "trace"}, "env.log_level: 'trace' is not one of info, debug"),
        ({"colour": "red"}, "env.colour: the app has no cluster-level parameter 'colour'"),
        ({"web": {"node_name": "a"}}, "env.admin_password: required"),
        ({"admin_password": SECRET}, "env.web.node_name: required"),
    ],
)
def test_deploy_env_refusals_name_the_field(given: dict[str, Any], message: str) -> None:
    full: dict[str, Any] = {"admin_password": SECRET, "web": {"node_name": "web-a"}}
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(full.get(key), dict):
            full[key] = {**full[key], **value}
        else:
            full[key] = value
    if "required" in message:  # leave the required value out
        field = message.split(":")[0].split(".")[1:]
        if len(field) == 1:
            full.pop(field[0])
        else:
            full[field[0]].pop(field[1])
    with pytest.raises(ParamError) as caught:
        params.deploy_env(parse_spec(app()), full)
    assert str(caught.value).startswith(message)


def test_a_bad_password_is_refused_without_quoting_it() -> None:
    with pytest.raises(ParamError) as caught:
        params.deploy_env(parse_spec(app()), {"admin_password": "short", "web": {"node_name": "a"}})
    assert "short" not in str(caught.value)
    assert str(caught.value).startswith("env.admin_password: the value does not match")


def test_a_role_key_wins_over_the_cluster_level_one() -> None:
    spec = parse_spec(app())
    env = {CLUSTER_SCOPE: {"port": "7001", "log_level": "debug"}, "web": {"node_name": "a"}}
    web = params.effective(spec, env, "web")
    db = params.effective(spec, env, "db")
    assert web["port"] == "80" and db["port"] == "7001"  # web declares port; db sees the cluster's
    assert web["log_level"] == db["log_level"] == "debug"
    assert params.by_role(spec, {CLUSTER_SCOPE: {"port": "7002"}}) == {"db": {"port": "7002"}}
    assert params.view(env) == {"web": {"node_name": "a"}, "port": "7001", "log_level": "debug"}


def test_a_cluster_level_password_is_sealed_shown_as_stars_and_opened_for_the_nodes() -> None:
    sealer = Sealer.generate()
    spec = parse_spec(app())
    env = params.deploy_env(spec, {"admin_password": SECRET, "web": {"node_name": "a"}})
    cluster = seal_passwords(
        Cluster(id="cl-1", name="s", owner="o", runtime="r", app=spec, counts={"web": 1}, env=env), sealer
    )
    assert is_sealed(cluster.env[CLUSTER_SCOPE]["admin_password"])
    assert SECRET not in cluster.model_dump_json()
    assert env_view(cluster)["admin_password"] == REDACTED
    assert env_view(cluster)["web"] == {"node_name": "a"}
    assert open_cluster(cluster, sealer).env[CLUSTER_SCOPE]["admin_password"] == SECRET


def test_a_cluster_level_password_default_moves_out_of_the_spec() -> None:
    sealer = Sealer.generate()
    spec_data = app()
    spec_data["env"]["admin_password"] = {"type": "password", "default": "default-Pw-77"}
    spec = parse_spec(spec_data)
    cluster = seal_passwords(
        Cluster(id="cl-2", name="s", owner="o", runtime="r", app=spec, counts={"web": 1}), sealer
    )
    assert cluster.app.env["admin_password"].default is None
    assert "default-Pw-77" not in cluster.model_dump_json()
    assert open_cluster(cluster, sealer).env[CLUSTER_SCOPE]["admin_password"] == "default-Pw-77"
