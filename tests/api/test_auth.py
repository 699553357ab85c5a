"""Tokens map to owners: no token is a 401, another owner's cluster is a 404, an admin sees all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from api_helpers import ADMIN, ALICE, APP, BOB, DEAD_CLOUD, bearer, error_of

from pitrix.api.app import create_app
from pitrix.api.auth import Tokens, read_tokens_file
from pitrix.runtime.service import RuntimeService
from pitrix.settings import ApiSettings, ConfigError

Client = TestClient[Any, Any]


async def create(api: Client, token: str, name: str) -> str:
    response = await api.post(
        "/v1/clusters", json={"runtime": "dead", "app": APP, "name": name}, headers=bearer(token)
    )
    assert response.status == 202, await response.text()
    return str((await response.json())["cluster"]["id"])


async def test_no_token_is_401_json(api: Client) -> None:
    response = await api.get("/v1/clusters")
    error = await error_of(response, 401)
    assert error["code"] == "unauthorized" and error["field"] == "Authorization"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer nope-not-a-token-at-all", "Basic dXNlcjpwYXNz", "Bearer "])
async def test_bad_token_is_401(api: Client, header: str) -> None:
    await error_of(await api.get("/v1/clusters", headers={"Authorization": header}), 401)


async def test_probes_need_no_token(api: Client) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await api.get(path)).status == 200, path


async def test_metrics_take_an_admin_token(api: Client) -> None:
    """Its series name every owner's clusters, nodes and monitor values: an owner's token must
    not read another owner's through them."""
    await error_of(await api.get("/metrics"), 401)
    assert (await api.get("/metrics", headers=bearer(ALICE))).status == 403
    response = await api.get("/metrics", headers=bearer(ADMIN))
    assert response.status == 200 and "pitrix_clusters" in await response.text()


async def test_owners_see_only_their_clusters(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    mine = await create(api, ALICE, "alices")
    theirs = await create(api, BOB, "bobs")

    listing = await (await api.get("/v1/clusters", headers=bearer(ALICE))).json()
    assert [c["id"] for c in listing["clusters"]] == [mine]
    assert listing["clusters"][0]["owner"] == "alice"

    for method, path in [
        ("GET", f"/v1/clusters/{theirs}"),
        ("GET", f"/v1/clusters/{theirs}/jobs"),
        ("GET", f"/v1/clusters/{theirs}/events"),
        ("POST", f"/v1/clusters/{theirs}/retry"),
        ("DELETE", f"/v1/clusters/{theirs}"),
    ]:
        response = await api.request(method, path, headers=bearer(ALICE))
        error = await error_of(response, 404)
        assert theirs in error["message"]

    everything = await (await api.get("/v1/clusters", headers=bearer(ADMIN))).json()
    assert {mine, theirs} <= {c["id"] for c in everything["clusters"]}
    shown = await api.get(f"/v1/clusters/{theirs}", headers=bearer(ADMIN))
    assert (await shown.json())["owner"] == "bob"


async def test_admin_may_create_for_another_owner_but_an_owner_may_not(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    body = {"runtime": "dead", "app": APP, "owner": "bob"}
    error = await error_of(await api.post("/v1/clusters", json=body, headers=bearer(ALICE)), 400)
    assert error["field"] == "owner"
    response = await api.post("/v1/clusters", json=body, headers=bearer(ADMIN))
    assert (await response.json())["cluster"]["owner"] == "bob"


async def test_only_admins_change_runtimes(api: Client) -> None:
    error = await error_of(await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ALICE)), 403)
    assert error["code"] == "forbidden"


async def test_unix_socket_without_token_acts_as_admin(service: RuntimeService, tmp_path: Path) -> None:
    api = ApiSettings(unix_socket=tmp_path / "api.sock")
    tokens = Tokens.from_settings(api)
    client: Client = TestClient(TestServer(create_app(service, tokens), host="127.0.0.1"))
    await client.start_server()
    try:
        assert (await client.get("/v1/runtimes")).status == 200
        # A token given must still be a known one.
        await error_of(await client.get("/v1/runtimes", headers=bearer("x" * 20)), 401)
    finally:
        await client.close()


def test_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text('[[tokens]]\ntoken = "abcdefghijklmnopq"\nowner = "carol"\nadmin = true\n')
    tokens = Tokens.from_settings(ApiSettings(tokens_file=path))
    assert tokens.identify("abcdefghijklmnopq") is not None
    assert tokens.identify("abcdefghijklmnopq").owner == "carol"  # type: ignore[union-attr]
    assert tokens.identify("abcdefghijklmnopX") is None
    assert tokens.anonymous is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[tokens]]\ntoken = "short"\nowner = "carol"\n', "tokens.0.token"),
        ('[[tokens]]\ntoken = "abcdefghijklmnopq"\n', "tokens.0.owner"),
        ('[[tokens]]\ntoken = "abcdefghijklmnopq"\nowner = "Carol Smith"\n', "tokens.0.owner"),
        ("[[tokens]\n", "not valid TOML"),
        ('users = ["x"]\n', "unknown key 'users'"),
    ],
)
def test_bad_tokens_file_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"api\.tokens_file") as info:
        read_tokens_file(path)
    assert message in str(info.value)


def test_missing_tokens_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_tokens_file(tmp_path / "absent.toml")


def test_auth_none_only_on_loopback() -> None:
    assert ApiSettings(auth="none", listen="127.0.0.5:0").auth == "none"
    with pytest.raises(ValueError, match="loopback"):
        ApiSettings(auth="none", listen="0.0.0.0:9610")
    tokens = Tokens.from_settings(ApiSettings(auth="none"))
    assert tokens.anonymous is not None and tokens.anonymous.admin


def test_auto_auth_is_open_only_without_tokens_on_loopback(tmp_path: Path) -> None:
    open_ = Tokens.from_settings(ApiSettings())
    assert open_.anonymous is not None and open_.anonymous.admin
    with_tokens = Tokens.from_settings(ApiSettings(tokens=[{"token": ALICE, "owner": "alice"}]))  # type: ignore[list-item]
    assert with_tokens.anonymous is None
    with pytest.raises(ConfigError, match="loopback"):
        Tokens.from_settings(ApiSettings(listen="0.0.0.0:9610"))
    with pytest.raises(ConfigError, match="no token is configured"):
        Tokens.from_settings(ApiSettings(auth="tokens"))


async def test_a_link_to_another_owners_cluster_is_refused(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    bobs = await api.post("/v1/clusters", json={"runtime": "dead", "app": APP}, headers=bearer(BOB))
    theirs = (await bobs.json())["cluster"]["id"]
    before = await (await api.get("/v1/clusters", headers=bearer(ADMIN))).json()
    body = {"runtime": "dead", "app": APP, "links": {"peer": theirs}}
    error = await error_of(await api.post("/v1/clusters", json=body, headers=bearer(ALICE)), 400)
    assert error["field"] == "links.peer", error
    assert "owner alice has no cluster" in error["message"]
    body["links"] = ["not", "an", "object"]
    error = await error_of(await api.post("/v1/clusters", json=body, headers=bearer(ALICE)), 400)
    assert error["field"] == "links", error
    after = await (await api.get("/v1/clusters", headers=bearer(ADMIN))).json()
    assert len(after["clusters"]) == len(before["clusters"])  # nothing was made
