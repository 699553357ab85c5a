"""Backups and restores on simulator VMs (light ones: the point is pitrix's part, not an app's).

A small app whose hooks leave traces in its volumes: the backup's record and snapshots, the order
``backup`` command → ``pre`` → snapshot → ``post`` (the snapshot holds what ``pre`` wrote, the
volume afterwards what ``post`` did), a failing ``pre`` (backup ``failed``, ``post`` still run,
cluster ``active``), a restore into a new cluster holding each node's data, the refusals, a
delete repeated, backups outliving their cluster, and the schedule's due time and retention
driven by an injected clock.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from e2e_cloud import Cloud, simulated_cloud
from test_lifecycle import expect

from pitrix.runtime.backup_service import LONGEST_SLEEP, due_at
from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.repository import NotFound
from pitrix.runtime.service import InvalidRequest
from pitrix.sealing import is_sealed
from pitrix.store import Store

pytestmark = pytest.mark.e2e

APP: dict[str, Any] = {
    "name": "bk",
    "version": "2.0.1",
    "roles": [
        {
            "name": "db",
            "count": 2,
            "image": "plain",
            "volume": {"size": 1, "mount_point": "/srv/db"},
            "env": {"secret": {"type": "password", "default": "s3cret-value"}},
            "services": {"init": {"cmd": "test -d srv/db/. && echo init >> srv/db/inits"}},
        }
    ],
    "backup": {
        "backup": {
            "cmd": 'echo "$LABEL $PITRIX_BACKUP_ID" > srv/db/dump',
            "params": {"LABEL": {"default": "nightly", "pattern": "[a-z]+"}},
        },
        "pre": {"cmd": "touch srv/db/frozen && test ! -e srv/db/fail-pre"},
        "post": {"cmd": "rm -f srv/db/frozen && echo thawed >> srv/db/thaws"},
        "restore": {
            "cmd": 'echo "$PITRIX_RESTORE $PITRIX_BACKUP_ID $PITRIX_BACKUP_NODE" > srv/db/restored',
        },
        "keep": 1,
    },
}


@pytest.fixture
async def cloud(store: Store, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with simulated_cloud(store, tmp_path, "--light") as sim:
        yield sim


def volume(cloud: Cloud, volume_id: str) -> Path:
    return cloud.workdir / "sim" / "volumes" / volume_id / "data"


async def snapshots_ledger(cloud: Cloud) -> dict[str, dict[str, Any]]:
    async with cloud.http.get(f"{cloud.sim_url}/_sim/ledger") as response:
        return {s["snapshot_id"]: s for s in (await response.json())["snapshots"]}


async def test_backup_restore_delete_and_schedule(cloud: Cloud) -> None:
    service = cloud.service
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=APP, channel="ssh")
    cid = cluster.id
    await expect(service, cid, "active")
    nodes = {n.node_id: n for n in await service.nodes(cid)}
    for node_id, node in nodes.items():
        (volume(cloud, node.volume_id) / "data").write_text(f"rows of {node_id}\n")

    # -- a backup: record, hooks in order, snapshots ---------------------------------------------
    job = await service.act(cid, "backup", {"name": "first", "params": {"LABEL": "manual"}})
    await expect(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "successful"
    [first] = await service.backups.of_cluster(cid)
    assert (first.status, first.name, first.app.version, first.counts) == (
        "complete",
        "first",
        "2.0.1",
        {"db": 2},
    )
    assert is_sealed(first.env["db"]["secret"])  # the env is kept, its password sealed
    ledger = await snapshots_ledger(cloud)
    assert sorted(s.node_id for s in first.snapshots) == ["db-1", "db-2"]
    for entry in first.snapshots:
        node = nodes[entry.node_id]
        assert entry.volume_id == node.volume_id
        taken = Path(ledger[entry.snapshot_id]["path"])
        assert ledger[entry.snapshot_id]["name"] == f"{first.id}-{entry.node_id}"
        # the dump and pre's mark were there when the snapshot was taken; post ran after it
        assert (taken / "dump").read_text() == f"manual {first.id}\n"
        assert (taken / "frozen").exists() and not (taken / "thaws").exists()
        assert not (volume(cloud, node.volume_id) / "frozen").exists()
        assert (volume(cloud, node.volume_id) / "thaws").read_text() == "thawed\n"

    # -- refusals -----------------------------------------------------------------------------------
    for body, words in [
        ({"params": {"LABEL": "UPPER"}}, "params.LABEL: 'UPPER' does not match"),
        ({"params": {"LEVEL": 1}}, "params.LEVEL: the backup command has no parameter"),
        ({"colour": 1}, "colour: unknown field"),
    ]:
        with pytest.raises(InvalidRequest, match=re.escape(words)):
            await service.act(cid, "backup", body)

    # -- a failing pre: the backup fails, post still runs, the cluster stays active ----------------
    (volume(cloud, nodes["db-2"].volume_id) / "fail-pre").touch()
    job = await service.act(cid, "backup", {})
    after = await expect(service, cid, "active")
    assert (await service.get_job(cid, job.id)).status == "failed" and "backup-pre" in (
        after.last_error or ""
    )
    failed = (await service.backups.of_cluster(cid))[-1]
    assert failed.status == "failed" and "backup-pre failed" in (failed.error or ""), failed
    assert not any(s.snapshot_id for s in failed.snapshots)  # nothing taken after a failed pre
    for node in nodes.values():
        assert (volume(cloud, node.volume_id) / "thaws").read_text() == "thawed\nthawed\n"
    (volume(cloud, nodes["db-2"].volume_id) / "fail-pre").unlink()

    # -- restore into a new cluster ----------------------------------------------------------------
    for restore, kwargs, words in [
        ({"backup": failed.id}, {}, f"restore.backup: backup {failed.id} is failed"),
        ({"backup": "bk-nothere"}, {}, "restore.backup: owner o has no backup"),
        ({"backup": first.id}, {"counts": {"db": 1}}, "counts: a backup of every node restores"),
        ({"backup": first.id}, {"runtime": "other"}, "runtime: a backup is restored on its own runtime"),
        ({"backup": first.id, "x": 1}, {}, "restore.x: unknown field"),
    ]:
        with pytest.raises(InvalidRequest, match=re.escape(words)):
            await service.backups.restore(owner="o", restore=restore, **kwargs)
    with pytest.raises(InvalidRequest, match=r"restore\.backup: owner p has no backup"):
        await service.backups.restore(owner="p", restore={"backup": first.id})
    restored, _ = await service.backups.restore(owner="o", restore={"backup": first.id}, name="again")
    await expect(service, restored.id, "active")
    assert (restored.name, restored.restored_from, restored.app.version) == ("again", first.id, "2.0.1")
    assert (await service.get_cluster(restored.id)).env["db"]["secret"] != first.env["db"]["secret"]
    for node in await service.nodes(restored.id):
        data = volume(cloud, node.volume_id)
        assert node.volume_id != nodes[node.node_id].volume_id
        assert (data / "data").read_text() == f"rows of {node.node_id}\n"  # its own node's volume
        assert (data / "restored").read_text() == f"1 {first.id} {node.node_id}\n"
        assert (data / "inits").read_text() == "init\ninit\n"  # restore ran before this init

    # -- the schedule: due time from the records, retention of scheduled backups -------------------
    now = [1_000_000.0]
    service.backups.clock = lambda: now[0]
    assert await service.backups.tick(cid) == LONGEST_SLEEP  # no policy
    policy = await service.backups.put_policy(cid, {"interval_hours": 1})
    assert (policy.keep, policy.since) == (1, now[0])  # keep: the app's default
    now[0] += 3500
    assert await service.backups.tick(cid) == 100  # due one interval after the policy was set
    for _ in range(2):
        now[0] += 3600
        await service.backups.tick(cid)  # due: a scheduled backup starts
        await expect(service, cid, "active")
        scheduled = [r for r in await service.backups.of_cluster(cid) if r.scheduled]
        assert scheduled[-1].status == "complete"
        now[0] = scheduled[-1].created + 10
        assert await service.backups.tick(cid) == LONGEST_SLEEP  # not due: no second one
        records = await service.backups.of_cluster(cid)
        assert due_at(policy, records) == scheduled[-1].created + 3600  # the next, from the last one's time
    # keep 1: the older scheduled one was deleted by the tick, the manual and failed ones stay
    records = await service.backups.of_cluster(cid)
    assert [r.id for r in records if not r.scheduled] == [first.id, failed.id]
    assert len([r for r in records if r.scheduled]) == 1

    # -- delete: snapshots then record, repeated; backups outlive their cluster ---------------------
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")
    assert {r.id for r in await service.backups.of_cluster(cid)} >= {first.id, failed.id}
    await service.backups.delete(first.id)
    with pytest.raises(NotFound):
        await service.backups.delete(first.id)
    ledger = await snapshots_ledger(cloud)
    assert all(ledger[s.snapshot_id]["status"] == "deleted" for s in first.snapshots)
    with pytest.raises(NotFound):
        await service.backups.get(first.id)
    with pytest.raises((LifecycleError, InvalidRequest)):  # no backup of a deleted cluster
        await service.act(cid, "backup", {})
