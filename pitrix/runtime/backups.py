"""Backups as pitrixd keeps them in its etcd: one record per backup, and one policy per cluster.

    /backups/<cid>/<bid>          BackupRecord (outlives its cluster: only a DELETE removes it)
    /backup-policies/<cid>        BackupPolicy (scheduled backups and their retention)

A backup's record is written (``pending``) before any snapshot is taken and lists each snapshot
as it is made, so a pitrixd restarted mid-backup finds what it took, and a backup that failed still
names the snapshots its delete must remove. The record keeps what a restore needs to make the
same cluster again: the app spec of the version backed up, the role counts and the env (password
values stay sealed, bound to the source cluster; a restore opens and seals them again for the
new one).
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pitrix.runtime.spec import AppSpec
from pitrix.store import Store

BACKUPS = "/backups/"
POLICIES = "/backup-policies/"
BackupStatus = Literal["pending", "complete", "failed", "deleting"]


def backup_key(cid: str, bid: str) -> str:
    return f"{BACKUPS}{cid}/{bid}"


def backups_prefix(cid: str) -> str:
    return f"{BACKUPS}{cid}/"


def policy_key(cid: str) -> str:
    return f"{POLICIES}{cid}"


def snapshot_name(bid: str, node_id: str) -> str:
    """A snapshot's deterministic cloud name: looked up before one is taken."""
    return f"{bid}-{node_id}"


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def dump(self) -> bytes:
        return self.model_dump_json().encode()


class BackupSnapshot(BaseModel):
    """One node's volume in a backup, and the snapshot taken of it ("" until taken)."""

    node_id: str
    role: str
    volume_id: str
    size: int
    snapshot_id: str = ""


class BackupRecord(_Record):
    id: str
    cluster_id: str
    cluster_name: str
    owner: str
    runtime: str
    name: str = ""
    status: BackupStatus = "pending"
    scheduled: bool = False  # made by the cluster's policy: its retention applies to it
    job_id: str = ""
    created: float = Field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    app: AppSpec
    counts: dict[str, int]
    env: dict[str, dict[str, str]] = Field(default_factory=dict)  # passwords sealed for cluster_id
    channel: str = "rest"
    nodes: Literal["all", "first"] = "all"
    snapshots: list[BackupSnapshot] = Field(default_factory=list)

    def view(self) -> dict[str, object]:
        """As the API shows it: the app by name and version, no env values (they may be secret)."""
        data = self.model_dump(mode="json", exclude={"app", "env"})
        data["app"] = {"name": self.app.name, "version": self.app.version}
        return data


class BackupPolicy(_Record):
    interval_hours: float = Field(gt=0, le=24 * 366)
    keep: int = Field(ge=1, le=1000)
    since: float = Field(default_factory=time.time)  # the first backup is due one interval after


class Backups:
    """Reads and writes of the records above (no lifecycle: the action and the service decide)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, bid: str) -> BackupRecord | None:
        """A backup by id alone (its cluster may be gone): one prefix read."""
        kvs, _ = await self.store.get_prefix(BACKUPS)
        for kv in kvs:
            if kv.key.endswith(f"/{bid}"):
                return BackupRecord.model_validate_json(kv.value)
        return None

    async def of_cluster(self, cid: str) -> list[BackupRecord]:
        kvs, _ = await self.store.get_prefix(backups_prefix(cid))
        return sorted((BackupRecord.model_validate_json(kv.value) for kv in kvs), key=lambda b: b.created)

    async def put(self, record: BackupRecord) -> None:
        await self.store.put(backup_key(record.cluster_id, record.id), record.dump())

    async def delete(self, record: BackupRecord) -> None:
        await self.store.delete(backup_key(record.cluster_id, record.id))

    async def policy(self, cid: str) -> BackupPolicy | None:
        kv = await self.store.get(policy_key(cid))
        return BackupPolicy.model_validate_json(kv.value) if kv is not None else None

    async def put_policy(self, cid: str, policy: BackupPolicy) -> None:
        await self.store.put(policy_key(cid), policy.dump())

    async def delete_policy(self, cid: str) -> None:
        await self.store.delete(policy_key(cid))
