"""The app catalog is per owner: another owner's registration never changes what a name means.

The probe's finding: after alice registered ``shop`` 1.0.0, bob's ``shop`` 1.0.1 was accepted and
alice's next ``create --app shop`` ran bob's spec (bob's commands as root on alice's VMs).
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from api_helpers import ADMIN, ALICE, BOB, DEAD_CLOUD, TOKENS, bearer, error_of

from pitrix.api.app import SERVICE, create_app
from pitrix.api.auth import Tokens
from pitrix.runtime.catalog import AppCatalog, AppRecord
from pitrix.runtime.service import RuntimeService
from pitrix.runtime.spec import parse_spec
from pitrix.store import Store

Client = TestClient[Any, Any]


def shop(version: str, image: str) -> dict[str, Any]:
    return {"name": "shop", "version": version, "roles": [{"name": "web", "count": 1, "image": image}]}


async def create(api: Client, token: str, app: str, **extra: Any) -> dict[str, Any]:
    body = {"runtime": "dead", "app": app, **extra}
    response = await api.post("/v1/clusters", json=body, headers=bearer(token))
    assert response.status == 202, await response.text()
    return await response.json()  # type: ignore[no-any-return]


async def image_of(api: Client, cid: str) -> str:
    """The image of the spec the cluster was created from (its record keeps the whole spec)."""
    cluster = await api.server.app[SERVICE].get_cluster(cid)
    return cluster.app.roles[0].image


async def test_another_owner_cannot_shadow_an_app(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    assert (await api.post("/v1/apps", json=shop("1.0.0", "alice-shop"), headers=bearer(ALICE))).status == 201
    # bob may have a shop of his own, even a newer one: it is his alone.
    response = await api.post("/v1/apps", json=shop("1.0.1", "bob-shop"), headers=bearer(BOB))
    assert response.status == 201
    # Even the very version alice holds, with another spec: no conflict, nothing shared.
    assert (await api.post("/v1/apps", json=shop("1.0.0", "bob-shop"), headers=bearer(BOB))).status == 201

    created = await create(api, ALICE, "shop")
    assert created["cluster"]["app"] == {"name": "shop", "version": "1.0.0"}
    assert await image_of(api, created["cluster"]["id"]) == "alice-shop"
    assert await image_of(api, (await create(api, ALICE, "shop@1.0.0"))["cluster"]["id"]) == "alice-shop"
    shown = await (await api.get("/v1/apps/shop", headers=bearer(ALICE))).json()
    assert shown["owner"] == "alice" and shown["versions"] == ["1.0.0"]
    assert shown["spec"]["roles"][0]["image"] == "alice-shop"
    await error_of(await api.get("/v1/apps/shop?version=1.0.1", headers=bearer(ALICE)), 404)
    response = await api.post(
        "/v1/clusters", json={"runtime": "dead", "app": "shop@1.0.1"}, headers=bearer(ALICE)
    )
    await error_of(response, 404)

    listing = await (await api.get("/v1/apps", headers=bearer(ALICE))).json()
    assert [(a["version"], a["owner"]) for a in listing["apps"]] == [("1.0.0", "alice")]
    bobs = await (await api.get("/v1/apps/shop", headers=bearer(BOB))).json()
    assert bobs["owner"] == "bob" and bobs["spec"]["roles"][0]["image"] == "bob-shop"

    # An admin creating for alice gets alice's shop, not the admin's nor bob's.
    for_alice = await create(api, ADMIN, "shop", owner="alice")
    assert for_alice["cluster"]["owner"] == "alice"
    assert await image_of(api, for_alice["cluster"]["id"]) == "alice-shop"


async def test_a_password_default_is_masked_in_every_catalog_view(api: Client) -> None:
    spec = shop("2.0.0", "alice-shop")
    spec["roles"][0]["env"] = {
        "admin_password": {"type": "password", "default": "hunter2-default"},
        "port": {"type": "integer", "default": 8080},
    }
    spec["env"] = {"root_password": {"type": "password", "default": "cluster-level-default"}}
    registered = await api.post("/v1/apps", json=spec, headers=bearer(ALICE))
    assert registered.status == 201
    shown = await api.get("/v1/apps/shop", headers=bearer(ALICE))
    for text in (await registered.text(), await shown.text()):
        assert "hunter2-default" not in text and "cluster-level-default" not in text
    env = (await shown.json())["spec"]["roles"][0]["env"]
    assert env["admin_password"]["default"] == "******" and env["port"]["default"] == 8080
    assert (await shown.json())["spec"]["env"]["root_password"]["default"] == "******"


async def test_an_owner_cannot_use_or_see_another_owners_app(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    assert (await api.post("/v1/apps", json=shop("2.0", "bob-shop"), headers=bearer(BOB))).status == 201
    await error_of(await api.get("/v1/apps/shop", headers=bearer(ALICE)), 404)
    response = await api.post("/v1/clusters", json={"runtime": "dead", "app": "shop"}, headers=bearer(ALICE))
    await error_of(response, 404)
    assert (await (await api.get("/v1/apps", headers=bearer(ALICE))).json())["apps"] == []
    error = await error_of(await api.get("/v1/apps?owner=bob", headers=bearer(ALICE)), 400)
    assert error["field"] == "owner"
    as_bob = await (await api.get("/v1/apps?owner=bob", headers=bearer(ADMIN))).json()
    assert [a["owner"] for a in as_bob["apps"]] == ["bob"]


async def test_published_apps_serve_everyone_but_an_owners_own_come_first(api: Client) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    error = await error_of(
        await api.post("/v1/apps?publish=true", json=shop("1.0", "x"), headers=bearer(BOB)), 403
    )
    assert error["code"] == "forbidden"
    published = await api.post("/v1/apps?publish=true", json=shop("1.0", "ops-shop"), headers=bearer(ADMIN))
    assert published.status == 201
    assert (await published.json())["published"] is True

    # bob has no shop of his own: the published one.
    created = await create(api, BOB, "shop")
    assert created["cluster"]["app"]["version"] == "1.0"
    listing = await (await api.get("/v1/apps", headers=bearer(BOB))).json()
    assert [(a["version"], a["published"]) for a in listing["apps"]] == [("1.0", True)]

    # alice's own shop comes first, newer or not; the published version stays reachable by version.
    assert (await api.post("/v1/apps", json=shop("0.9", "alice-shop"), headers=bearer(ALICE))).status == 201
    assert (await create(api, ALICE, "shop"))["cluster"]["app"]["version"] == "0.9"
    assert (await create(api, ALICE, "shop@1.0"))["cluster"]["app"]["version"] == "1.0"
    listing = await (await api.get("/v1/apps", headers=bearer(ALICE))).json()
    assert [(a["version"], a["published"]) for a in listing["apps"]] == [("0.9", False), ("1.0", True)]
    # The admin's own, unpublished apps are the admin's alone.
    assert (
        await api.post("/v1/apps", json={**shop("5.0", "y"), "name": "tool"}, headers=bearer(ADMIN))
    ).status == 201
    await error_of(await api.get("/v1/apps/tool", headers=bearer(BOB)), 404)


async def test_the_shared_catalog_moves_into_its_registrants_namespaces(
    service: RuntimeService, store: Store
) -> None:
    """Records of the catalog before namespaces (``/apps/<name>/<version>``) keep working for
    whoever registered them, and for nobody else (a shadow planted then stays harmless)."""
    for owner, version, image in [("alice", "1.0.0", "alice-shop"), ("bob", "1.0.1", "bob-shop")]:
        record = AppRecord(name="shop", version=version, owner=owner, spec=parse_spec(shop(version, image)))
        await store.put(f"/apps/shop/{version}", record.model_dump_json())
    api: Client = TestClient(TestServer(create_app(service, Tokens(TOKENS)), host="127.0.0.1"))
    await api.start_server()
    try:
        alices = await (await api.get("/v1/apps/shop", headers=bearer(ALICE))).json()
        assert (alices["version"], alices["owner"], alices["versions"]) == ("1.0.0", "alice", ["1.0.0"])
        bobs = await (await api.get("/v1/apps/shop", headers=bearer(BOB))).json()
        assert bobs["version"] == "1.0.1"
    finally:
        await api.close()
    assert (await store.get_prefix("/apps/"))[0] == []
    # Running it again (another replica, a restart) changes nothing.
    assert await AppCatalog(store).migrate() == 0
    assert len((await store.get_prefix("/catalog/"))[0]) == 2
