"""``GET /v1/clusters/{cid}/tabs/{name}`` without VMs: the tab named in every refusal, the owner's
clusters only, an active cluster only; and the CLI's table of a tab's answer. (A tab run on real
agents: tests/runtime/test_appcenter_services.py.)"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ALICE, BOB, bearer, error_of, put_data_cluster

from pitrix.api.openapi import openapi_document
from pitrix.cli.main import tab_table
from pitrix.store import Store

Client = TestClient[Any, Any]
APP = {
    "name": "kv",
    "version": "1.0",
    "profile": "appcenter",
    "display_tabs": {"keys": {"cmd": "kv-keys --json", "roles": ["data"], "description": "keys"}},
    "roles": [{"name": "data", "count": 2, "image": "kv"}],
}


async def test_tabs_are_refused_naming_the_tab(api: Client, store: Store) -> None:
    await put_data_cluster(store, "cl-tab1", APP, node_status="registered")
    path = "/v1/clusters/cl-tab1/tabs"
    error = await error_of(await api.get(f"{path}/nope", headers=bearer(ALICE)), 404)
    assert error["message"] == "tab: cluster cl-tab1 has no display tab 'nope' (has keys)"
    await error_of(await api.get(f"{path}/keys", headers=bearer(BOB)), 404)  # not Bob's cluster
    await put_data_cluster(store, "cl-tab2", APP, node_status="registered", state="stopped")
    error = await error_of(await api.get("/v1/clusters/cl-tab2/tabs/keys", headers=bearer(ALICE)), 409)
    assert error["message"] == "tab: cluster cl-tab2 is stopped; tabs are shown while it is active"
    # active, but its metadata service was never made (the dead cloud): a conflict, said so
    error = await error_of(await api.get(f"{path}/keys", headers=bearer(ALICE)), 409)
    assert error["message"] == "tab: cluster cl-tab1 has no running metadata service"
    assert "/v1/clusters/{cid}/tabs/{name}" in openapi_document()["paths"]


def test_the_cli_prints_a_tab_as_columns() -> None:
    table = {"tab": "keys", "node": "data-1", "labels": ["key", "size"], "data": [["alpha", 10], ["b"]]}
    assert tab_table(table).splitlines() == ["KEY    SIZE", "alpha  10", "b", "(2 rows, from data-1)"]
