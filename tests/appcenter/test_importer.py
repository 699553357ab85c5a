"""The AppCenter importer over packages we wrote in AppCenter's format (tests/appcenter/packages)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pitrix.appcenter.importer import Conversion, PackageError, import_dir, import_package, read_dir
from pitrix.runtime.spec import parse_spec

PACKAGES = Path(__file__).parent / "packages"


def outcome(conversion: Conversion, field: str) -> tuple[str, str]:
    lines = [line for line in conversion.report if line.field == field]
    assert len(lines) == 1, f"{field}: {lines}"
    return lines[0].outcome, lines[0].note


def test_roleless_package_becomes_one_role_with_appcenter_keys() -> None:
    conversion = import_dir(PACKAGES / "solo")
    spec = parse_spec(conversion.spec)
    assert spec.profile == "appcenter" and spec.roleless and spec.name == "solo-keeper"
    (role,) = spec.roles
    # The role is named after the form's group of its nodes ({{cluster.keeper_node.count}}).
    assert role.name == "keeper_node" and role.count == 3 and role.count_range == [1, 3, 5]
    assert role.image == "img-solo0001" and role.scale_horizontal
    assert role.volume is not None and role.volume.mount_point == "/srv/keeper" and role.volume.size == 20
    # A placeholder inside a string is filled with its default, and the report says so.
    assert role.services["start"].cmd == "keeperctl start --port 7181"
    assert outcome(conversion, "{{env.client_port}}")[0] == "approximated"
    # Services without a timeout get AppCenter's 600 s; the destroy veto is kept.
    assert role.services["start"].timeout == 1200 and role.services["stop"].timeout == 600
    assert role.services["destroy"].allow_force is False
    assert role.services["scale_in"].pre_check == "keeperctl can-shrink"
    # Env keys are the cluster file's, typed by the form field behind each placeholder.
    assert set(spec.env) == {
        "clientPort",
        "4lw.commands.whitelist",
        "adminPassword",
        "tickTime",
        "log.mode",
        "-p",
    }
    assert spec.env["clientPort"].type == "integer" and spec.env["clientPort"].changeable is False
    assert spec.env["log.mode"].range == ["info", "debug"]
    # An empty default that its own pattern refuses: no default, asked for at create.
    password = spec.env["adminPassword"]
    assert password.type == "password" and password.default is None and password.required
    assert spec.endpoints["client"].port == "env.clientPort" and spec.endpoints["peers"].port == 0
    assert (
        spec.display_tabs["members"].cmd == "keeperctl members" and spec.display_tabs["members"].timeout == 5
    )
    assert spec.locale["en"]["err_code3"].startswith("The keeper cannot leave")
    assert set(spec.locale) == {"en", "zh-cn"}
    assert role.health_check is not None and role.health_check.unhealthy_threshold == 3
    assert role.monitor is not None and set(role.monitor.items) == {"latency", "sessions"}


def test_roleless_report_says_what_was_dropped_and_why() -> None:
    conversion = import_dir(PACKAGES / "solo")
    assert outcome(conversion, "nodes.keeper_node.instance_class")[0] == "dropped"
    kind, note = outcome(conversion, "endpoints.reserved_ips.vip")
    assert kind == "mapped" and "reserved through the cloud" in note
    assert set(parse_spec(conversion.spec).reserved_ips) == {"vip"}
    assert outcome(conversion, "upgrade_policy")[0] == "dropped"
    assert outcome(conversion, "env.4lw.commands.whitelist") == ("mapped", "")
    kind, note = outcome(conversion, "nodes.keeper_node.services.destroy")
    assert kind == "approximated" and "post_stop_service" in note
    kind, note = outcome(conversion, "monitor")
    assert kind == "approximated" and "mode" in note  # a string item is no number
    assert outcome(conversion, "nodes.0.role")[0] == "approximated"
    text = conversion.report_text()
    assert text.splitlines()[-1] == (
        f"{len(conversion.lines('mapped'))} mapped, {len(conversion.lines('approximated'))} approximated, "
        f"{len(conversion.lines('dropped'))} dropped"
    )


def test_two_roles_with_underscores_custom_services_and_links() -> None:
    conversion = import_dir(PACKAGES / "duo")
    spec = parse_spec(conversion.spec)
    assert not spec.roleless and [r.name for r in spec.roles] == ["data_node", "route_proxy"]
    data, proxy = spec.roles
    assert data.count_range == list(range(1, 10)) and proxy.count_range is None
    assert data.scale_horizontal and not proxy.scale_horizontal  # advanced_actions per role
    assert data.passphraseless == "ssh-rsa" and data.vertical_scaling.max_in_flight == 1000
    assert data.services["init"].post_start_service and data.services["init"].nodes_to_execute_on == 1
    assert data.services["scale_out"].timeout == 86400
    assert data.ordering == "duoctl order"
    repair = data.custom_services["repair-node"]
    assert repair.params_style == "json_arg" and repair.timeout == 1800
    assert set(repair.params) == {"node.ip", "force"} and repair.params["node.ip"].required
    assert data.custom_services["compact"].timeout == 600
    kind, note = outcome(conversion, "nodes.data_node.services.repairNode")
    assert kind == "approximated" and "repair-node" in note
    assert set(data.env) == {"cache.size.mb", "engine"} and set(proxy.env) == {"proxy.port", "modes"}
    assert proxy.env["modes"].multichoice
    # "route_proxy.env.proxy.port" (a role's parameter) read as the parameter it names.
    assert spec.endpoints["proxy"].port == "env.proxy.port" and spec.endpoints["admin"].protocol == "http"
    assert spec.links["keeper_service"].required
    assert spec.backup is not None and spec.backup_roles() == ["data_node"]
    assert spec.backup.backup is not None and spec.backup.backup.params_style == "json_arg"
    assert spec.display_tabs["shards"].roles == ["data_node"]
    assert outcome(conversion, "console_theme") == ("dropped", "not a field the importer knows")
    # AppCenter runs a monitor (or health check) only when it says enable: true.
    assert proxy.monitor is None and outcome(conversion, "nodes.route_proxy.monitor")[0] == "dropped"


def test_images_override_the_package_and_name_its_roles() -> None:
    files = read_dir(PACKAGES / "duo")
    conversion = import_package(
        files, images={"*": "img-local", "route_proxy": "img-proxy"}, name="duo", version="2.1"
    )
    spec = parse_spec(conversion.spec)
    assert [r.image for r in spec.roles] == ["img-local", "img-proxy"]
    assert (spec.name, spec.version) == ("duo", "2.1")
    assert outcome(conversion, "nodes.route_proxy.container") == ("approximated", "image given at import")
    with pytest.raises(PackageError, match=r"^images\.web: the package has no role 'web'"):
        import_package(files, images={"web": "img-x"})


def _files(**changes: str) -> dict[str, str]:
    files = read_dir(PACKAGES / "duo")
    files.update(changes)
    return files


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"config.json": "{not json"}, r"^config\.json: not JSON"),
        ({"locale/en.json": "[1, 2"}, r"^locale/en\.json: not JSON"),
        (
            {"cluster.json.mustache": '{"name": {{cluster.name}}, }'},
            r"^cluster\.json\.mustache: does not parse",
        ),
        ({"cluster.json.mustache": '{"name": {{#cluster.name}}x{{/cluster.name}}}'}, r"only plain"),
        ({"cluster.json.mustache": '{"name": {{cluster.name}'}, r"never closed"),
        ({"cluster.json.mustache": '{"name": "x"}'}, r"^cluster\.json\.mustache: nodes:"),
    ],
)
def test_bad_packages_name_the_file_and_field(changes: dict[str, str], message: str) -> None:
    with pytest.raises(PackageError, match=message):
        import_package(_files(**changes))


def test_unknown_fields_in_strict_places_are_refused() -> None:
    text = (PACKAGES / "duo" / "cluster.json.mustache").read_text()
    bad = text.replace(
        '"cmd": "duoproxy stop", "order": 1', '"cmd": "duoproxy stop", "order": 1, "retries": 3'
    )
    with pytest.raises(PackageError, match=r"nodes\.1\.services\.stop\.retries: unknown field"):
        import_package(_files(**{"cluster.json.mustache": bad}))
    bad = text.replace('"port": 8631, "protocol": "http"', '"port": 8631, "proto": "http"')
    with pytest.raises(PackageError, match=r"endpoints\.admin\.proto: unknown field"):
        import_package(_files(**{"cluster.json.mustache": bad}))
    with pytest.raises(PackageError, match=r"^config\.json: missing"):
        import_package({"cluster.json.mustache": text})


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _leaves(v, (*path, k))] or [path]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _leaves(v, (*path, i))] or [path]
    return [path]


def _replaced(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(data))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def test_any_value_of_the_wrong_type_is_a_package_error_never_a_crash() -> None:
    """Every value of the cluster file (defaults filled in) replaced by each JSON type: the import
    either succeeds with a spec parse_spec takes or raises PackageError naming the file."""
    files = read_dir(PACKAGES / "duo")
    form = json.loads(files["config.json"])
    cluster = json.loads(json.dumps(import_package(files).spec))  # only to prove the package imports
    assert cluster["name"] == "duo-store"
    filled = (PACKAGES / "duo" / "cluster.json.mustache").read_text()
    # The filled form of the cluster file: placeholders replaced by null keep it JSON.
    base = json.loads(re.sub(r"\{\{[^}]*\}\}", "null", filled))
    tried = 0
    for path in _leaves(base):
        for value in (None, "x", -1, True, ["a"], {"k": 1}):
            text = json.dumps(_replaced(base, path, value))
            try:
                conversion = import_package({"config.json": json.dumps(form), "cluster.json.mustache": text})
            except PackageError as exc:
                assert str(exc).split(":", 1)[0] in ("cluster.json.mustache", "config.json"), exc
            else:
                parse_spec(conversion.spec)
            tried += 1
    assert tried > 200


def test_whole_numbers_are_published_as_appcenter_writes_them() -> None:
    """config.json's ``2.0`` is ``2`` in AppCenter's metadata (Go writes a whole float so): the
    default becomes the whole number, the parameter stays a number (2.5 may still be given)."""
    from pitrix.appcenter.form import FormField
    from pitrix.appcenter.params import convert, infer
    from pitrix.runtime.spec import EnvParam

    assert infer(2.0) == {"type": "number", "default": 2}
    assert infer(-1.0) == {"type": "number", "default": -1}
    assert infer(0.9) == {"type": "number", "default": 0.9}
    form = FormField("env.multiplier", {"type": "number", "default": 2.0, "range": [1.0, 2.0, 2.5]})
    param, notes = convert(form, 2.0)
    assert notes == [] and param["default"] == 2 and param["range"] == [1, 2, 2.5]
    parsed = EnvParam.model_validate(param)
    assert parsed.check(parsed.default) == "2" and parsed.check(2.5) == "2.5"
