"""App spec validation: good specs load, bad ones are refused naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pitrix.runtime.spec import SpecError, load_spec, parse_spec

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
    assert app.role("web").env == {"n": "3", "s": "x", "l": "[1, 2]"}


def test_unknown_role_lookup_names_the_roles() -> None:
    with pytest.raises(SpecError, match="no role named 'db' \\(have web\\)"):
        parse_spec(spec()).role("db")


def test_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
