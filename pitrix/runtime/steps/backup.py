"""The steps of a backup: its record, the app's dump, the hooks around the snapshots, the end.

Every step is safe to run again after a crash: the record is written only if absent, commands
keep their ids (``<job>-<label>-<node>``: an agent runs an id once and a re-run reads its result),
and a snapshot's cloud name is deterministic (``<backup id>-<node id>``), looked up before one
is taken. A step that fails marks the record ``failed`` (a retried step that then succeeds
moves it on again), so the record never stays ``pending`` for a job that ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pitrix.runtime.backups import BackupRecord, BackupSnapshot, backup_key, snapshot_name
from pitrix.runtime.ownership import LostOwnership
from pitrix.runtime.records import Node
from pitrix.runtime.secret_env import seal_passwords
from pitrix.runtime.spec import Backup, BackupHook, Service
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.custom import ServiceFailed, hide
from pitrix.runtime.steps.nodes import members
from pitrix.runtime.steps.services import command_line, raise_failures, run_commands
from pitrix.store import StoreUnavailable
from pitrix.store.types import Op


def _spec(ctx: JobContext) -> Backup:
    backup = ctx.cluster.app.backup
    if backup is None:
        raise OperationError("the app declares no backup")
    return backup


async def _read(ctx: JobContext, bid: str) -> BackupRecord | None:
    kv = await ctx.store.get(backup_key(ctx.cid, bid))
    return BackupRecord.model_validate_json(kv.value) if kv is not None else None


async def _save(ctx: JobContext, record: BackupRecord) -> None:
    await ctx.write(Op("put", backup_key(ctx.cid, record.id), record.dump()))


async def _failing(ctx: JobContext, bid: str, work: Callable[[], Awaitable[str]]) -> str:
    """Run ``work``; if it fails, the record says so (and why) before the error goes on.

    pitrixd's own etcd cut off, or the cluster taken over by another replica, is no failure of
    the backup: the job resumes (here or there) and the record stays ``pending`` for it."""
    try:
        return await work()
    except (StoreUnavailable, LostOwnership):
        raise
    except Exception as exc:
        record = await _read(ctx, bid)
        if record is not None and record.status == "pending":
            await _save(ctx, record.model_copy(update={"status": "failed", "error": str(exc) or repr(exc)}))
        raise


async def record_backup(ctx: JobContext, bid: str, name: str, scheduled: bool, node_ids: list[str]) -> str:
    """The backup's record, ``pending``, before anything is taken (kept as it is if present)."""
    if await _read(ctx, bid) is not None:
        return f"backup {bid} recorded before"
    chosen = await members(ctx, node_ids)
    missing = [n.node_id for n in chosen if not n.volume_id] + sorted(
        set(node_ids) - {n.node_id for n in chosen}
    )
    if missing:
        raise ServiceFailed(f"backup: node(s) {', '.join(missing)} have no volume any more")
    volumes = {role: ctx.cluster.app.role(role).volume for role in {n.role for n in chosen}}
    sealed = seal_passwords(ctx.cluster, ctx.sealer)  # the plan holds the env opened
    record = BackupRecord(
        id=bid,
        cluster_id=ctx.cid,
        cluster_name=ctx.cluster.name,
        owner=ctx.cluster.owner,
        runtime=ctx.cluster.runtime,
        name=name,
        scheduled=scheduled,
        job_id=ctx.job.id,
        app=sealed.app,
        counts=dict(ctx.cluster.counts),
        env=sealed.env,
        channel=ctx.cluster.channel,
        nodes=_spec(ctx).nodes,
        snapshots=[
            BackupSnapshot(
                node_id=n.node_id,
                role=n.role,
                volume_id=n.volume_id,
                size=volumes[n.role].size if volumes[n.role] else 0,  # type: ignore[union-attr]
            )
            for n in chosen
        ],
    )
    await _save(ctx, record)
    return f"backup {bid} of {len(chosen)} volume(s) recorded"


def _env(bid: str, cid: str) -> dict[str, str]:
    return {"PITRIX_BACKUP_ID": bid, "PITRIX_BACKUP_CLUSTER": cid}


async def _run_on(
    ctx: JobContext,
    label: str,
    targets: list[Node],
    cmd: str,
    timeout: int,
    env: dict[str, str],
    secrets: list[str],
) -> None:
    """``cmd`` on every target with ``env`` exported; any failure fails the step naming the nodes."""
    service = Service(cmd=command_line(cmd, env), timeout=timeout)
    results = await run_commands(ctx, label, [(n, service) for n in targets])
    try:
        raise_failures(f"backup {label} failed", targets, results)
    except OperationError as exc:
        raise ServiceFailed(hide(str(exc), secrets)) from None


async def dump(
    ctx: JobContext, bid: str, node_ids: list[str], params: dict[str, dict[str, str]], secrets: list[str]
) -> str:
    """The app's ``backup`` command (its dump into the volume) on the first nodes it asks for."""

    async def work() -> str:
        command = _spec(ctx).backup
        assert command is not None
        chosen = await members(ctx, node_ids)
        limit = command.nodes_to_execute_on
        targets: list[Node] = []
        for role in dict.fromkeys(n.role for n in chosen):
            of_role = [n for n in chosen if n.role == role]
            targets += of_role[:limit] if limit is not None else of_role
        started = time.monotonic()
        for role in dict.fromkeys(n.role for n in targets):
            env = {**params.get(role, {}), **_env(bid, ctx.cid)}
            await _run_on(
                ctx,
                "backup-dump",
                [n for n in targets if n.role == role],
                command.cmd,
                command.timeout,
                env,
                secrets,
            )
        return f"backup command on {len(targets)} node(s) in {time.monotonic() - started:.2f}s"

    return await _failing(ctx, bid, work)


async def snapshots(ctx: JobContext, bid: str, node_ids: list[str]) -> str:
    """``pre`` on the nodes, a snapshot of each node's volume, then ``post`` (always, once ``pre``
    ran: a frozen app is thawed whatever became of the snapshots)."""

    async def work() -> str:
        spec = _spec(ctx)
        targets = await members(ctx, node_ids)
        env = _env(bid, ctx.cid)
        began = time.monotonic()
        try:
            if spec.pre is not None:  # a pre that failed on some node may have frozen the others
                await _hook(ctx, "backup-pre", targets, spec.pre, env)
            taken = await _take(ctx, bid)
        finally:
            if spec.post is not None:
                await _hook(ctx, "backup-post", targets, spec.post, env)
        return f"{taken} snapshot(s) in {time.monotonic() - began:.2f}s"

    return await _failing(ctx, bid, work)


async def _hook(
    ctx: JobContext, label: str, targets: list[Node], hook: BackupHook, env: dict[str, str]
) -> None:
    await _run_on(ctx, label, targets, hook.cmd, hook.timeout, env, [])


async def _take(ctx: JobContext, bid: str) -> int:
    """Each recorded volume's snapshot, found by name or taken; their ids into the record."""
    record = await _read(ctx, bid)
    if record is None:
        raise OperationError(f"backup {bid} has no record")
    found = {s.name: s for s in await ctx.provider.describe_snapshots(name_prefix=f"{bid}-")}
    tags = {"pitrix:backup": bid, "pitrix:cluster": ctx.cid, "pitrix:owner": ctx.cluster.owner}

    async def one(entry: BackupSnapshot) -> BackupSnapshot:
        name = snapshot_name(bid, entry.node_id)
        snapshot = found.get(name)
        if snapshot is None:
            snapshot = await ctx.provider.create_snapshot(
                entry.volume_id, name, {**tags, "pitrix:node": entry.node_id}
            )
            ctx.log.info("snapshot.taken", node=entry.node_id, snapshot_id=snapshot.snapshot_id)
        return entry.model_copy(update={"snapshot_id": snapshot.snapshot_id})

    taken = list(await asyncio.gather(*(one(e) for e in record.snapshots)))
    await _save(ctx, record.model_copy(update={"snapshots": taken}))
    return len(taken)


async def complete(ctx: JobContext, bid: str) -> str:
    record = await _read(ctx, bid)
    if record is None:
        raise OperationError(f"backup {bid} has no record")
    missing = [s.node_id for s in record.snapshots if not s.snapshot_id]
    if missing:
        raise OperationError(f"backup {bid}: no snapshot of {', '.join(missing)}")
    if record.status != "complete":
        await _save(
            ctx, record.model_copy(update={"status": "complete", "error": None, "finished": time.time()})
        )
    return f"backup {bid} complete: {len(record.snapshots)} snapshot(s)"
