"""POST /v1/apps/import: an AppCenter package converted, reported and registered in the owner's catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, BOB, DEAD_CLOUD, bearer, error_of

from pitrix.appcenter.files import read_dir

Client = TestClient[Any, Any]
PACKAGES = Path(__file__).resolve().parents[1] / "appcenter" / "packages"
UNKNOWN_SERVICE_FIELD = json.dumps(
    {"nodes": [{"role": "a", "container": {"image": "i"}, "services": {"start": {"cmd": "x", "retry": 1}}}]}
)


async def test_import_registers_the_app_for_its_owner_and_reports_each_field(api: Client) -> None:
    files = read_dir(PACKAGES / "solo")
    dry = await api.post("/v1/apps/import", json={"files": files, "dry_run": True}, headers=bearer(ALICE))
    assert dry.status == 200
    shown = await dry.json()
    assert (shown["app"], shown["version"], shown["dry_run"]) == ("solo-keeper", "1.0.0", True)
    assert shown["spec"]["profile"] == "appcenter" and shown["spec"]["roleless"] is True
    outcomes = {line["field"]: line["outcome"] for line in shown["report"]}
    assert outcomes["env.4lw.commands.whitelist"] == "mapped" and outcomes["vxnet"] == "dropped"
    await error_of(
        await api.get("/v1/apps/solo-keeper", headers=bearer(ALICE)), 404
    )  # a dry run registers nothing

    body = {"files": files, "images": {"keeper_node": "img-sim"}}
    response = await api.post("/v1/apps/import", json=body, headers=bearer(ALICE))
    assert response.status == 201, await response.text()
    assert "spec" not in await response.json()
    again = await api.post("/v1/apps/import", json=body, headers=bearer(ALICE))
    assert again.status == 200  # the same package again: already registered
    app = await (await api.get("/v1/apps/solo-keeper", headers=bearer(ALICE))).json()
    assert app["owner"] == "alice" and app["spec"]["roles"][0]["image"] == "img-sim"
    await error_of(await api.get("/v1/apps/solo-keeper", headers=bearer(BOB)), 404)  # alice's own
    other = {**body, "images": {"*": "img-other"}}
    error = await error_of(await api.post("/v1/apps/import", json=other, headers=bearer(ALICE)), 409)
    assert "another spec" in error["message"]
    error = await error_of(
        await api.post("/v1/apps/import?publish=true", json=body, headers=bearer(ALICE)), 403
    )

    # A cluster of it shows its endpoints with the port its parameter holds.
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    create = {
        "runtime": "dead",
        "app": "solo-keeper",
        "env": {"adminPassword": "secret99", "clientPort": 9181},
    }
    created = await api.post("/v1/clusters", json=create, headers=bearer(ALICE))
    assert created.status == 202, await created.text()
    cid = (await created.json())["cluster"]["id"]
    cluster = await (await api.get(f"/v1/clusters/{cid}", headers=bearer(ALICE))).json()
    assert cluster["endpoints"] == {
        "client": {"port": 9181, "protocol": "tcp", "from": "env.clientPort", "addresses": []},
        "peers": {"port": 0, "protocol": "tcp", "addresses": []},
    }


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"files": {"config.json": "{oops"}}, "config.json", "not JSON"),
        (
            {"files": {"cluster.json.mustache": '{"nodes": [ {{cluster.name}} }'}},
            "cluster.json.mustache",
            "does not parse",
        ),
        (
            {"files": {"cluster.json.mustache": UNKNOWN_SERVICE_FIELD}},
            "cluster.json.mustache",
            "nodes.0.services.start.retry: unknown field",
        ),
        ({"images": {"web": "img-1"}}, "images.web", "no role"),
        ({"images": ["img-1"]}, "images", "an object"),
        ({"files": "config"}, "files", "an object"),
        ({"dry_run": "yes"}, "dry_run", "true or false"),
        ({"name": "Bad Name"}, "name", "not an app name"),
        ({"version": "1/2"}, "version", "not a version"),
        ({"extra": 1}, "extra", "unknown field"),
    ],
)
async def test_bad_imports_are_a_400_naming_the_file_or_field(
    api: Client, change: dict[str, Any], field: str, says: str
) -> None:
    body: dict[str, Any] = {"files": read_dir(PACKAGES / "duo"), "dry_run": True}
    for key, value in change.items():
        body[key] = {**body[key], **value} if key == "files" and isinstance(value, dict) else value
    error = await error_of(await api.post("/v1/apps/import", json=body, headers=bearer(ALICE)), 400)
    assert error["field"] == field and says in error["message"], error
