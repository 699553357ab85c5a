"""An app's declared links (``AppSpec.links``) at create and at ``POST /v1/clusters/{cid}/links``: a
required link must be given and stays, an unchangeable one is set at create only, a link naming an
app points at a cluster of that app; each refusal a 400 naming the link, nothing changed."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, BOB, DEAD_CLOUD, bearer

from pitrix.runtime.keys import cluster_key
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import parse_spec
from pitrix.store import Store

Client = TestClient[Any, Any]
WEB = {
    "name": "web",
    "version": "1.0",
    "roles": [{"name": "web", "count": 1, "image": "web"}],
    "links": {
        "db": {"app": "db", "required": True, "changeable": False},
        "cache": {"app": "cache"},
        "peer": {"required": True},
    },
}


def spec(name: str) -> dict[str, Any]:
    return {"name": name, "version": "1.0", "roles": [{"name": "n", "count": 1, "image": name}]}


async def put_cluster(
    store: Store, cid: str, app: dict[str, Any], links: dict[str, str] | None = None
) -> None:
    cluster = Cluster(
        id=cid, name=cid, owner="alice", runtime="dead", app=parse_spec(app), counts={}, state="active"
    ).model_copy(update={"links": links or {}})
    await store.put(cluster_key(cid), cluster.dump())


async def refused(response: Any, field: str, words: str) -> None:
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["field"] == field and words in error["message"], error


async def test_declared_links_are_checked_at_create_and_when_changed(api: Client, store: Store) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    for cid, app in (("cl-db1", "db"), ("cl-db2", "db"), ("cl-ca1", "cache"), ("cl-ot1", "other")):
        await put_cluster(store, cid, spec(app))
    create = {"runtime": "dead", "app": WEB}

    async def create_with(links: dict[str, str]) -> Any:
        return await api.post("/v1/clusters", json={**create, "links": links}, headers=bearer(ALICE))

    await refused(await create_with({"peer": "cl-ot1"}), "links.db", "required")
    await refused(await create_with({"db": "cl-ca1", "peer": "cl-ot1"}), "links.db", "the link wants 'db'")
    await refused(
        await create_with({"db": "cl-db1", "peer": "cl-ot1", "x": "cl-ot1"}), "links.x", "declares no link"
    )
    before = len((await (await api.get("/v1/clusters", headers=bearer(ALICE))).json())["clusters"])

    await put_cluster(store, "cl-web1", WEB, {"db": "cl-db1", "peer": "cl-ot1"})
    url = "/v1/clusters/cl-web1/links"

    async def relink(links: dict[str, Any], token: str = ALICE) -> Any:
        return await api.post(url, json={"links": links}, headers=bearer(token))

    await refused(await relink({"db": "cl-db2"}), "links.db", "is not changeable")
    await refused(await relink({"peer": None}), "links.peer", "required")
    await refused(
        await relink({"cache": "cl-ot1"}), "links.cache", "runs app 'other', the link wants 'cache'"
    )
    await refused(await relink({"cache": "cl-nothing"}), "links.cache", "owner alice has no cluster")
    await refused(await relink({"cache": None}), "links.cache", "has no link 'cache'")
    await refused(await relink({"peer": "cl-ot1"}), "links", "has these links already")
    await refused(await relink({}), "links", "must be an object")
    assert (await relink({"cache": "cl-ca1"}, BOB)).status == 404  # another owner's cluster
    after = len((await (await api.get("/v1/clusters", headers=bearer(ALICE))).json())["clusters"])
    assert after == before + 1  # only the record put above: no create got through
    kv = await store.get(cluster_key("cl-web1"))
    assert kv is not None and Cluster.model_validate_json(kv.value).state == "active"  # nothing changed

    accepted = await relink({"cache": "cl-ca1", "peer": "cl-db2"})
    assert accepted.status == 202, await accepted.text()
    job = (await accepted.json())["job"]
    assert job["action"] == "relink"
    assert job["args"] == {
        "links": {"db": "cl-db1", "peer": "cl-db2", "cache": "cl-ca1"},
        "before": {"db": "cl-db1", "peer": "cl-ot1"},
    }
