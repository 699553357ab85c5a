"""Backups as the API sees them: list, show, delete, restore, and the per-cluster schedule.

Taking a backup is an action (``actions/backup.py``); everything else about backups is here.
Deleting one removes its snapshots from the cloud and then its record, and may be repeated: a
delete cut short finds the record marked ``deleting`` and finishes it. A restore is a create
(``RuntimeService.create_cluster``) of the backup's app version, counts and env on the backup's
runtime, whose plan makes the volumes from the snapshots (``steps/restore.py``).

The scheduler runs one task per cluster on the replica that owns the cluster (started and
stopped with ownership, like the recovery monitor); a cluster without a policy costs one read
every ``LONGEST_SLEEP`` seconds, which is also how soon a policy set through another replica
is seen. When a backup is due is computed
from the records in etcd only (the last scheduled backup's time, else the time the policy was
set, plus the interval), so a restarted or adopting replica neither doubles nor skips one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from pitrix.logs import get_logger
from pitrix.runtime.actions.base import InvalidRequest
from pitrix.runtime.backups import BackupPolicy, BackupRecord, Backups
from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.params import view
from pitrix.runtime.repository import NotFound
from pitrix.runtime.secret_env import env_context
from pitrix.runtime.supervisor import KeyedTasks

if TYPE_CHECKING:
    from pitrix.runtime.records import Cluster, Job
    from pitrix.runtime.service import RuntimeService

RESTORE_FIELDS = ("backup",)
BUSY_PAUSE = 60.0  # seconds before a due backup is tried again while the cluster is busy
LONGEST_SLEEP = 300.0  # a scheduler looks at its records at least this often


def due_at(policy: BackupPolicy, records: list[BackupRecord]) -> float:
    """When the next scheduled backup is due: one interval after the last scheduled one began
    (whatever became of it), or after the policy was set if none was made since."""
    made = [r.created for r in records if r.scheduled and r.created >= policy.since]
    return max(made, default=policy.since) + policy.interval_hours * 3600.0


def beyond_keep(keep: int, records: list[BackupRecord]) -> list[BackupRecord]:
    """The complete scheduled backups past the newest ``keep``, oldest first (retention's to delete)."""
    complete = sorted((r for r in records if r.scheduled and r.status == "complete"), key=lambda r: r.created)
    return complete[: max(0, len(complete) - keep)]


class BackupService:
    def __init__(self, service: RuntimeService, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.records = Backups(service.store)
        self.clock = clock
        self.tasks = KeyedTasks("backup-schedule")
        self.log = get_logger("pitrix.backups")

    # -- reading ----------------------------------------------------------------------------------

    async def get(self, bid: str, owner: str | None = None) -> BackupRecord:
        record = await self.records.get(bid)
        if record is None or (owner is not None and record.owner != owner):
            raise NotFound(f"backup {bid!r} does not exist")
        return record

    async def of_cluster(self, cid: str, owner: str | None = None) -> list[BackupRecord]:
        """A cluster's backups, oldest first; a deleted cluster's too (backups outlive it)."""
        records = await self.records.of_cluster(cid)
        if owner is not None:
            records = [r for r in records if r.owner == owner]
        if not records:
            await self.service.repo.cluster(cid, owner)  # NotFound for a cluster that never was
        return records

    # -- deleting ---------------------------------------------------------------------------------

    async def delete(self, bid: str, owner: str | None = None) -> BackupRecord:
        """The snapshots, then the record; a backup still being taken, or being restored from (a
        create whose volumes are made from its snapshots), is refused (409)."""
        record = await self.get(bid, owner)
        if record.status == "pending" and await self._being_taken(record):
            raise LifecycleError(f"backup {bid} is being taken (job {record.job_id}); delete it once it ends")
        restoring = [
            c.id
            for c in await self.service.repo.clusters()
            if c.restored_from == bid and c.state == "creating"
        ]
        if restoring:
            raise LifecycleError(
                f"backup {bid} is being restored into {', '.join(restoring)}; delete it after"
            )
        if record.status != "deleting":
            record = record.model_copy(update={"status": "deleting"})
            await self.records.put(record)
        provider = await self.service.provider_for(record.runtime)
        ids = {s.snapshot_id for s in record.snapshots if s.snapshot_id}
        # A snapshot taken just before a crash may not be in the record yet: its name says whose it is.
        ids |= {s.snapshot_id for s in await provider.describe_snapshots(name_prefix=f"{bid}-")}
        if ids:
            await provider.delete_snapshots(sorted(ids))
        await self.records.delete(record)
        self.log.info("backup deleted", backup_id=bid, cluster_id=record.cluster_id, snapshots=len(ids))
        return record

    async def _being_taken(self, record: BackupRecord) -> bool:
        try:
            cluster = await self.service.repo.cluster(record.cluster_id)
        except NotFound:
            return False
        return cluster.state == "backing_up" and cluster.job_id == record.job_id

    # -- restoring --------------------------------------------------------------------------------

    async def restore(
        self,
        *,
        owner: str,
        restore: Any,
        name: str = "",
        runtime: str | None = None,
        channel: str | None = None,
        counts: dict[str, int] | None = None,
    ) -> tuple[Cluster, Job]:
        """A new cluster made from a complete backup (its app version, counts and env). Its name
        may differ; its runtime only by naming the backup's own; its counts only for a backup of
        each role's first node (``nodes: first``), since every node starts from that one snapshot."""
        if not isinstance(restore, dict):
            raise InvalidRequest('restore: must be an object {"backup": "<backup id>"}')
        unknown = [k for k in restore if k not in RESTORE_FIELDS]
        if unknown:
            raise InvalidRequest(f"restore.{unknown[0]}: unknown field (restore has backup)")
        bid = restore.get("backup")
        if not isinstance(bid, str) or not bid:
            raise InvalidRequest("restore.backup: required, a backup id")
        try:
            record = await self.get(bid, owner)
        except NotFound:
            raise InvalidRequest(f"restore.backup: owner {owner} has no backup {bid!r}") from None
        if record.status != "complete":
            raise InvalidRequest(f"restore.backup: backup {bid} is {record.status}, not complete")
        if runtime is not None and runtime != record.runtime:
            raise InvalidRequest(
                f"runtime: a backup is restored on its own runtime ({record.runtime!r}), not {runtime!r}"
            )
        if counts and record.nodes != "first":
            raise InvalidRequest(
                "counts: a backup of every node restores with its own counts "
                f"({', '.join(f'{r}={c}' for r, c in record.counts.items())})"
            )
        sealer = self.service.sealer
        opened = {
            scope: {
                k: sealer.open_text(v, env_context(record.cluster_id, scope, k)) for k, v in values.items()
            }
            for scope, values in record.env.items()
        }
        return await self.service.create_cluster(
            owner=owner,
            runtime=record.runtime,
            app=record.app.model_dump(mode="json"),
            name=name or f"{record.cluster_name}-restored",
            counts={**record.counts, **(counts or {})},
            channel=channel or record.channel,
            env=view(opened),
            restored_from=record.id,
        )

    # -- the schedule -----------------------------------------------------------------------------

    async def put_policy(self, cid: str, body: Any, owner: str | None = None) -> BackupPolicy:
        cluster = await self.service.repo.cluster(cid, owner)
        if cluster.app.backup is None:
            raise InvalidRequest(f"body: app {cluster.app.name} {cluster.app.version} declares no backup")
        if not isinstance(body, dict):
            raise InvalidRequest("body: must be an object {interval_hours, keep}")
        unknown = [k for k in body if k not in ("interval_hours", "keep")]
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: unknown field (a policy has interval_hours, keep)")
        hours = body.get("interval_hours")
        if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 < hours <= 24 * 366:
            raise InvalidRequest("interval_hours: required, a number of hours above 0 and at most 8784")
        keep = body.get("keep", cluster.app.backup.keep)
        if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= 1000:
            raise InvalidRequest("keep: a whole number from 1 to 1000")
        current = await self.records.policy(cid)
        since = current.since if current is not None else self.clock()
        policy = BackupPolicy(interval_hours=float(hours), keep=keep, since=since)
        await self.records.put_policy(cid, policy)
        if self.tasks.running(cid):  # owned here: look at the new policy now
            self.forget(cid)
            self.follow(cid)
        return policy

    async def get_policy(self, cid: str, owner: str | None = None) -> BackupPolicy | None:
        await self.service.repo.cluster(cid, owner)
        return await self.records.policy(cid)

    async def delete_policy(self, cid: str, owner: str | None = None) -> None:
        await self.service.repo.cluster(cid, owner)
        await self.records.delete_policy(cid)
        self.forget(cid)

    def follow(self, cid: str) -> None:
        """Run the cluster's schedule here (the caller owns the cluster); a no-op if running."""
        self.tasks.start(cid, partial(self._schedule, cid))

    def forget(self, cid: str) -> None:
        self.tasks.cancel(cid)

    async def stop(self) -> None:
        await self.tasks.stop()

    async def _schedule(self, cid: str) -> None:
        log = get_logger("pitrix.backups", cluster_id=cid)
        while True:
            try:
                pause = await self.tick(cid)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # etcd or the cloud away for a moment: look again later
                log.warning("backup schedule interrupted; resuming", error=str(exc) or type(exc).__name__)
                pause = BUSY_PAUSE
            if pause is None:
                log.info("backup schedule ends")
                return
            await asyncio.sleep(pause)

    async def tick(self, cid: str) -> float | None:
        """One look at a cluster's schedule: retention applied, a due backup started. Returns the
        seconds until the next look (None: the cluster is gone). A cluster without a policy is
        looked at again after ``LONGEST_SLEEP``: a policy set through another replica is found so."""
        policy = await self.records.policy(cid)
        if policy is None:
            return LONGEST_SLEEP
        try:
            cluster = await self.service.repo.cluster(cid)
        except NotFound:
            return None
        if cluster.state in ("deleting", "deleted"):
            return None
        records = await self.records.of_cluster(cid)
        for old in beyond_keep(policy.keep, records):
            await self.delete(old.id)
            self.log.info("retention deleted a backup", cluster_id=cid, backup_id=old.id, keep=policy.keep)
        now = self.clock()
        due = due_at(policy, records)
        if now < due:
            return min(due - now, LONGEST_SLEEP)
        if cluster.state != "active":
            return BUSY_PAUSE
        try:
            job = await self.service.act(cid, "backup", {"name": "scheduled", "scheduled": True})
        except (LifecycleError, InvalidRequest) as exc:  # busy, or the app lost its backup
            self.log.info("scheduled backup not started", cluster_id=cid, reason=str(exc))
            return BUSY_PAUSE
        self.log.info("scheduled backup started", cluster_id=cid, job_id=job.id)
        return BUSY_PAUSE
