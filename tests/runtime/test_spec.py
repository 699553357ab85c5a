"""App spec validation: good specs load, bad ones are refused naming the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pitrix.runtime.spec import EnvParam, SpecError, json_schema, load_spec, parse_spec, schema_text

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "app.yaml"


def spec(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "app",
        "roles": [{"name": "web", "count": 2, "image": "demo", "services": {"start": {"cmd": "start"}}}],
    }
    base.update(changes)
    return base


def test_demo_spec_loads() -> None:
    app = load_spec(DEMO)
    assert [r.name for r in app.roles] == ["web", "lb"]
    assert app.role("lb").services["start"].order == 2


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (spec(name="Bad Name"), "name"),
        (spec(roles=[]), "roles"),
        (spec(roles=[{"name": "web", "image": "x", "count": -1}]), "roles.0.count"),
        (spec(roles=[{"name": "web"}]), "roles.0.image"),
        (
            spec(roles=[{"name": "web", "image": "x", "services": {"start": {}}}]),
            "roles.0.services.start.cmd",
        ),
        (
            spec(roles=[{"name": "web", "image": "x", "services": {"boot": {"cmd": "x"}}}]),
            "roles.0.services.boot",
        ),
        (spec(roles=[{"name": "web", "image": "x", "colour": "red"}]), "roles.0.colour"),
        (spec(endpoints={"http": {"port": 70000}}), "endpoints.http.port"),
    ],
)
def test_errors_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert str(caught.value).startswith(field + ":"), str(caught.value)


def test_duplicate_roles_are_refused() -> None:
    role = {"name": "web", "image": "x"}
    with pytest.raises(SpecError, match="role 'web' appears twice"):
        parse_spec(spec(roles=[role, role]))


def test_env_values_become_strings() -> None:
    app = parse_spec(spec(roles=[{"name": "web", "image": "x", "env": {"n": 3, "s": "x", "l": [1, 2]}}]))
    assert app.role("web").env_defaults() == {"n": "3", "s": "x", "l": "[1, 2]"}
    assert app.role("web").env["n"].type == "integer"


def test_unknown_role_lookup_names_the_roles() -> None:
    with pytest.raises(SpecError, match="no role named 'db' \\(have web\\)"):
        parse_spec(spec()).role("db")


def test_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "app-spec.json"

FULL = {
    "name": "kv",
    "version": "2.1.0",
    "roles": [
        {
            "name": "node",
            "count": 3,
            "image": "kv",
            "cpu": 2,
            "memory": 2048,
            "volume": {"size": 20, "mount_point": "/data", "filesystem": "xfs"},
            "services": {
                "init": {"cmd": "kv init", "nodes_to_execute_on": 1, "post_start_service": True},
                "start": {"cmd": "kv start", "order": 1, "timeout": 60},
                "stop": {"cmd": "kv stop"},
            },
            "health_check": {"cmd": "kv ping", "interval": 10, "timeout": 5},
            "env": {
                "mode": {"type": "string", "default": "fast", "range": ["fast", "safe"]},
                "cache_mb": {"type": "integer", "default": 64, "min": 16, "max": 4096},
                "debug": {"type": "boolean", "default": False},
                "cluster_name": {"default": "kv", "changeable": False},
                "plain": 5,
            },
        }
    ],
    "endpoints": {"client": {"port": 6379}},
    "update_policy": {"canary": 1, "max_in_flight": 2},
}


def test_schema_file_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "schemas/app-spec.json is stale: regenerate it with "
        "`.venv/bin/python -m pitrix.runtime.spec > schemas/app-spec.json`"
    )


def test_full_spec_loads_and_matches_the_schema() -> None:
    app = parse_spec(FULL)
    node = app.role("node")
    assert node.volume is not None and node.volume.size == 20
    assert node.services["init"].post_start_service and node.services["init"].nodes_to_execute_on == 1
    assert node.health_check is not None and node.health_check.interval == 10
    assert node.env_defaults() == {
        "mode": "fast",
        "cache_mb": "64",
        "debug": "false",
        "cluster_name": "kv",
        "plain": "5",
    }
    assert not node.env["cluster_name"].changeable
    assert app.update_policy.max_in_flight == 2
    jsonschema.validate(FULL, json_schema())


def test_demo_spec_matches_the_schema() -> None:
    jsonschema.validate(yaml.safe_load(DEMO.read_text()), json_schema())


def role_with(**changes: Any) -> dict[str, Any]:
    return spec(roles=[{"name": "web", "image": "x", **changes}])


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (role_with(volume={"size": 0}), "roles.0.volume.size"),
        (role_with(volume={"size": 1, "mount_point": "data"}), "roles.0.volume.mount_point"),
        (role_with(volume={"size": 1, "mount_point": "/etc"}), "roles.0.volume.mount_point"),
        (role_with(volume={"size": 1, "mount_point": "/data/../etc"}), "roles.0.volume.mount_point"),
        (role_with(volume={"size": 1, "mount_point": "/da ta"}), "roles.0.volume.mount_point"),
        (role_with(volume={"size": 1, "mount_options": "noatime;reboot"}), "roles.0.volume.mount_options"),
        (
            role_with(services={"init": {"cmd": "x", "nodes_to_execute_on": 0}}),
            "roles.0.services.init.nodes_to_execute_on",
        ),
        (role_with(health_check={"cmd": "x", "interval": 0}), "roles.0.health_check.interval"),
        (role_with(health_check={"interval": 3}), "roles.0.health_check.cmd"),
        (role_with(env={"n": {"type": "integer", "default": "ten"}}), "roles.0.env.n"),
        (role_with(env={"n": {"type": "integer", "default": 1, "min": 5}}), "roles.0.env.n"),
        (role_with(env={"m": {"default": "x", "range": ["a", "b"]}}), "roles.0.env.m"),
        (role_with(env={"t": {"type": "colour"}}), "roles.0.env.t.type"),
        (role_with(env={"bad key": 1}), "roles.0.env"),
        (role_with(templates=[{"name": "Bad Name", "dest": "/x", "text": "t"}]), "roles.0.templates.0.name"),
        (role_with(templates=[{"name": "a", "dest": "x", "text": "t"}]), "roles.0.templates.0.dest"),
        (
            role_with(templates=[{"name": "a", "dest": "/x", "text": "t", "mode": "999"}]),
            "roles.0.templates.0.mode",
        ),
        (role_with(templates=[{"name": "a", "dest": "/x"}]), "roles.0.templates.0.text"),
        (spec(update_policy={"max_in_flight": 0}), "update_policy.max_in_flight"),
        (spec(update_policy={"canary": -1}), "update_policy.canary"),
    ],
)
def test_grown_fields_name_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert str(caught.value).startswith(field + ":"), str(caught.value)
    if field != "roles.0.env.n" and field != "roles.0.env.m":  # a default outside its own bounds: model only
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(data, json_schema())


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ({"type": "integer", "min": 1, "max": 10}, "7", "7"),
        ({"type": "integer", "min": 1, "max": 10}, 11, ValueError),
        ({"type": "integer"}, "7.5", ValueError),
        ({"type": "integer"}, True, ValueError),
        ({"type": "number", "max": 1.5}, "1.25", "1.25"),
        ({"type": "boolean"}, "TRUE", "true"),
        ({"type": "boolean"}, "yes", ValueError),
        ({"range": ["rr", "hash"]}, "hash", "hash"),
        ({"range": ["rr", "hash"]}, "random", ValueError),
        ({"type": "string"}, ["a"], ValueError),
    ],
)
def test_env_param_checks_values(param: dict[str, Any], value: Any, expected: Any) -> None:
    checked = EnvParam.model_validate(param)
    if expected is ValueError:
        with pytest.raises(ValueError):
            checked.check(value)
    else:
        assert checked.check(value) == expected


TEMPLATE = {"name": "motd", "dest": "/etc/motd", "text": "hello"}


@pytest.mark.parametrize(
    ("data", "field", "says"),
    [
        (role_with(templates=[{**TEMPLATE, "text": "{{if}}"}]), "roles.0.templates.0.text", "does not parse"),
        (
            role_with(templates=[{**TEMPLATE, "text": "{{nosuchfunc 1}}"}]),
            "roles.0.templates.0.text",
            "nosuchfunc",
        ),
        (role_with(templates=[{**TEMPLATE, "keys": ["env"]}]), "roles.0.templates.0.keys", "starting with /"),
        (role_with(templates=[TEMPLATE, TEMPLATE]), "roles.0.templates", "'motd' appears twice"),
        (
            role_with(templates=[{**TEMPLATE, "name": f"t{i}", "text": "x" * 5000} for i in range(3)]),
            "roles.0.templates",
            "fit in 12288",
        ),
        (role_with(image={}), "roles.0.image", "an image id"),
        (role_with(image={"aws": ""}), "roles.0.image", "an image id"),
    ],
)
def test_templates_and_images_are_checked_beyond_the_schema(
    data: dict[str, Any], field: str, says: str
) -> None:
    """What JSON Schema cannot say (a template that does not parse, a size over all of a role's
    templates) the model refuses all the same, naming the field."""
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert str(caught.value).startswith(field + ":") and says in str(caught.value), str(caught.value)


def test_templates_may_call_every_confd_function() -> None:
    """The runtime parses as the agent does: confd's functions by name, the key-space ones too."""
    text = '{{range lsdir "/hosts"}}{{getv (printf "/hosts/%s/ip" .)}} {{base .}}{{end}}'
    text += '{{toYaml (json "{}")}}{{getenv "HOME"}}'
    role = parse_spec(role_with(templates=[{**TEMPLATE, "text": text}])).roles[0]
    assert role.templates[0].text == text


def test_an_image_per_provider() -> None:
    role = parse_spec(role_with(image={"qingcloud": "img-1", "aws": "ami-2"})).roles[0]
    assert (role.image_for("qingcloud"), role.image_for("aws")) == ("img-1", "ami-2")
    with pytest.raises(
        SpecError, match=re.escape("roles.web.image: no image for provider 'openstack' (have aws, qingcloud)")
    ):
        role.image_for("openstack")
    assert parse_spec(role_with(image="img-9")).roles[0].image_for("anything") == "img-9"
    jsonschema.validate(role_with(image={"qingcloud": "img-1"}, templates=[TEMPLATE]), json_schema())
