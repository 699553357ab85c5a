"""The backup routes over a real RuntimeService and etcd, no VMs: refusals are 4xx naming the field,
another owner's backups do not exist, records are shown without env values, a delete of a backup
whose cloud is unreachable keeps its record (``deleting``) for a repeated delete, and a backup still
being taken cannot be deleted."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from api_helpers import ADMIN, ALICE, BOB, DEAD_CLOUD, bearer, error_of, put_data_cluster

from pitrix.runtime.backups import BackupRecord, Backups, BackupSnapshot
from pitrix.runtime.keys import cluster_key
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import parse_spec
from pitrix.store import Store

Client = TestClient[Any, Any]
APP: dict[str, Any] = {
    "name": "kv",
    "version": "1.2.0",
    "roles": [{"name": "data", "count": 2, "image": "x", "volume": {"size": 1}}],
    "backup": {
        "backup": {"cmd": "dump", "params": {"LEVEL": {"type": "integer", "default": 1, "max": 9}}},
        "keep": 3,
    },
}


async def cluster_of_alice(store: Store, app: dict[str, Any] = APP, state: str = "active") -> str:
    return await put_data_cluster(store, "cl-bk1", app, volumes=True, state=state)


def record(cid: str, status: str = "complete", job_id: str = "j-1") -> BackupRecord:
    return BackupRecord(
        id="bk-0001",
        cluster_id=cid,
        cluster_name="kv",
        owner="alice",
        runtime="dead",
        status=status,  # type: ignore[arg-type]
        job_id=job_id,
        app=parse_spec(APP),
        counts={"data": 2},
        env={"data": {"k": "v"}},
        snapshots=[
            BackupSnapshot(node_id="data-1", role="data", volume_id="vol-d1", size=1, snapshot_id="ss-1")
        ],
    )


async def test_bad_backup_requests_are_4xx_naming_the_field(api: Client, store: Store) -> None:
    cid = await cluster_of_alice(store)
    url = f"/v1/clusters/{cid}/backup"
    for body, field, words in [
        ({"params": {"LEVEL": 10}}, "params.LEVEL", "10 is above the maximum 9"),
        ({"params": {"SPEED": 1}}, "params.SPEED", "has no parameter 'SPEED' (has LEVEL)"),
        ({"params": []}, "params", "expected an object"),
        ({"name": 3}, "name", "a string of at most 64"),
        ({"scheduled": "yes"}, "scheduled", "true or false"),
        ({"when": "now"}, "when", "unknown field"),
    ]:
        error = await error_of(await api.post(url, json=body, headers=bearer(ALICE)), 400)
        assert error["field"] == field and words in error["message"], (body, error)
    assert (await api.post(url, json={}, headers=bearer(BOB))).status == 404
    for body, field, words in [
        ({}, "interval_hours", "required"),
        ({"interval_hours": 0}, "interval_hours", "above 0"),
        ({"interval_hours": 1, "keep": 0}, "keep", "from 1 to 1000"),
        ({"interval_hours": 1, "every": 2}, "every", "unknown field"),
    ]:
        response = await api.put(f"/v1/clusters/{cid}/backup-policy", json=body, headers=bearer(ALICE))
        error = await error_of(response, 400)
        assert error["field"] == field and words in error["message"], (body, error)
    assert (await api.get(f"/v1/clusters/{cid}/backup-policy", headers=bearer(ALICE))).status == 404
    response = await api.put(
        f"/v1/clusters/{cid}/backup-policy", json={"interval_hours": 6}, headers=bearer(ALICE)
    )
    assert response.status == 200 and (await response.json())["keep"] == 3  # the app's default
    shown = await (await api.get(f"/v1/clusters/{cid}/backup-policy", headers=bearer(ALICE))).json()
    assert (shown["interval_hours"], shown["keep"]) == (6, 3)
    assert (await api.delete(f"/v1/clusters/{cid}/backup-policy", headers=bearer(ALICE))).status == 200
    assert (await api.get(f"/v1/clusters/{cid}/backup-policy", headers=bearer(ALICE))).status == 404


async def test_an_app_without_backup_and_bad_restores_are_refused(api: Client, store: Store) -> None:
    plain = {k: v for k, v in APP.items() if k != "backup"}
    cid = await cluster_of_alice(store, plain)
    error = await error_of(await api.post(f"/v1/clusters/{cid}/backup", json={}, headers=bearer(ALICE)), 400)
    assert "declares no backup" in error["message"]
    response = await api.put(
        f"/v1/clusters/{cid}/backup-policy", json={"interval_hours": 1}, headers=bearer(ALICE)
    )
    assert "declares no backup" in (await error_of(response, 400))["message"]
    for body, field, words in [
        ({"restore": "bk-1"}, "restore", "must be an object"),
        ({"restore": {}}, "restore.backup", "required"),
        ({"restore": {"backup": "bk-none"}}, "restore.backup", "owner alice has no backup 'bk-none'"),
        ({"restore": {"backup": "bk-1"}, "app": "kv"}, "app", "a restore takes the backup's"),
        ({"restore": {"backup": "bk-1"}, "counts": []}, "counts", "an object"),
    ]:
        error = await error_of(await api.post("/v1/clusters", json=body, headers=bearer(ALICE)), 400)
        assert error["field"] == field and words in error["message"], (body, error)
    spec = {"name": "kv", "roles": [{"name": "a", "image": "x"}], "backup": {"keep": 2}}
    response = await api.post("/v1/clusters", json={"runtime": "dead", "app": spec}, headers=bearer(ALICE))
    assert "backup: no role has a volume" in (await error_of(response, 400))["message"]


async def test_records_are_owned_shown_without_env_and_deleted_again_after_a_failure(
    api: Client, store: Store
) -> None:
    assert (await api.post("/v1/runtimes", json=DEAD_CLOUD, headers=bearer(ADMIN))).status == 201
    cid = await cluster_of_alice(store)
    await Backups(store).put(record(cid))
    listed = await (await api.get(f"/v1/clusters/{cid}/backups", headers=bearer(ALICE))).json()
    [shown] = listed["backups"]
    assert shown["id"] == "bk-0001" and shown["app"] == {"name": "kv", "version": "1.2.0"}
    assert "env" not in shown and shown["snapshots"][0]["snapshot_id"] == "ss-1"
    assert (await api.get("/v1/backups/bk-0001", headers=bearer(BOB))).status == 404
    assert (await api.get(f"/v1/clusters/{cid}/backups", headers=bearer(BOB))).status == 404
    assert (await api.get("/v1/clusters/cl-none/backups", headers=bearer(ALICE))).status == 404
    assert (await api.get("/v1/backups/bk-0001", headers=bearer(ADMIN))).status == 200
    assert (await api.delete("/v1/backups/bk-0001", headers=bearer(BOB))).status == 404
    # The cloud cannot be reached: the delete fails, the record stays, marked, for the next delete.
    response = await api.delete("/v1/backups/bk-0001", headers=bearer(ALICE))
    assert response.status >= 500, await response.text()
    after = await Backups(store).get("bk-0001")
    assert after is not None and after.status == "deleting"
    assert (await api.delete("/v1/backups/bk-none", headers=bearer(ALICE))).status == 404


async def test_a_backup_being_taken_is_not_deleted(api: Client, store: Store) -> None:
    cid = await cluster_of_alice(store, state="backing_up")
    kv = await store.get(cluster_key(cid))
    assert kv is not None
    cluster = Cluster.model_validate_json(kv.value).model_copy(update={"job_id": "j-1"})
    await store.put(cluster_key(cid), cluster.dump())
    await Backups(store).put(record(cid, status="pending"))
    error = await error_of(await api.delete("/v1/backups/bk-0001", headers=bearer(ALICE)), 409)
    assert "is being taken" in error["message"]


async def test_a_backup_being_restored_is_not_deleted(api: Client, store: Store) -> None:
    cid = await cluster_of_alice(store)
    await Backups(store).put(record(cid))
    restoring = Cluster(
        id="cl-new1",
        name="copy",
        owner="alice",
        runtime="dead",
        app=parse_spec(APP),
        counts={"data": 2},
        state="creating",
        restored_from="bk-0001",
    )
    await store.put(cluster_key(restoring.id), restoring.dump())
    error = await error_of(await api.delete("/v1/backups/bk-0001", headers=bearer(ALICE)), 409)
    assert "is being restored into cl-new1" in error["message"]
