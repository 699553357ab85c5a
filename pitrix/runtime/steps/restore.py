"""A create from a backup (``POST /v1/clusters`` with ``restore``): volumes from its snapshots, then
the app's ``restore`` command, before the usual ``init`` and ``start``.

The cluster record names the backup (``Cluster.restored_from``). Only its create makes volumes
from snapshots: a node added later (scale-out, a recover's replacement) starts blank, as on any
cluster. Node ``<role>-i`` of the new cluster gets the snapshot of the backup's i-th node of that
role (by index), or, for a backup of the first node only (``backup.nodes: first``), that one
snapshot, which every node of the role starts from.
"""

from __future__ import annotations

from dataclasses import dataclass

from pitrix.runtime.backups import BackupRecord, Backups
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Node
from pitrix.runtime.spec import Service
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.nodes import members, split_id
from pitrix.runtime.steps.services import command_line, raise_failures, run_commands

STEP_MARGIN = 120.0


@dataclass(frozen=True)
class Source:
    snapshot_id: str
    node_id: str  # the backed-up node whose volume it was


def restoring(ctx: JobContext) -> bool:
    return bool(ctx.cluster.restored_from) and ctx.job.action == "create"


async def _record(ctx: JobContext) -> BackupRecord:
    record = await Backups(ctx.store).get(ctx.cluster.restored_from)
    if record is None or record.status != "complete":
        raise OperationError(
            f"backup {ctx.cluster.restored_from} is gone or not complete: nothing to restore"
        )
    return record


def sources_of(record: BackupRecord, node_ids: list[str]) -> dict[str, Source]:
    """Which snapshot each new node's volume starts as (nodes of roles not backed up: none)."""
    by_role: dict[str, list[tuple[int, str, str]]] = {}
    for entry in record.snapshots:
        by_role.setdefault(entry.role, []).append(
            (split_id(entry.node_id)[1], entry.node_id, entry.snapshot_id)
        )
    out: dict[str, Source] = {}
    for node_id in node_ids:
        role, index = split_id(node_id)
        taken = sorted(by_role.get(role, []))
        if not taken:
            continue
        _, source, snapshot = taken[0] if record.nodes == "first" else taken[min(index, len(taken)) - 1]
        out[node_id] = Source(snapshot, source)
    return out


async def volume_sources(ctx: JobContext, node_ids: list[str]) -> dict[str, Source]:
    """For the volumes step: the snapshots a restore's volumes are made from (none otherwise)."""
    if not restoring(ctx):
        return {}
    return sources_of(await _record(ctx), node_ids)


async def run_restore(ctx: JobContext, node_ids: list[str]) -> str:
    """The app's ``restore`` command on each node made from a snapshot, told it is a restore."""
    spec = ctx.cluster.app.backup
    if spec is None or spec.restore is None:
        return "no restore command"
    record = await _record(ctx)
    sources = sources_of(record, node_ids)
    targets: list[tuple[Node, Service]] = []
    for node in await members(ctx, list(sources)):
        env = {
            "PITRIX_RESTORE": "1",
            "PITRIX_BACKUP_ID": record.id,
            "PITRIX_BACKUP_CLUSTER": record.cluster_id,
            "PITRIX_BACKUP_NODE": sources[node.node_id].node_id,
        }
        targets.append((node, Service(cmd=command_line(spec.restore.cmd, env), timeout=spec.restore.timeout)))
    if not targets:
        return "no node made from a snapshot"
    results = await run_commands(ctx, "restore", targets)
    raise_failures("restore failed", [n for n, _ in targets], results)
    return f"restore on {len(targets)} node(s) from backup {record.id}"


def extend(plan: Plan, ctx: JobContext, node_ids: list[str]) -> None:
    """A restore's own steps in a create's plan (after the volumes are ready, before ``init``)."""
    spec = ctx.cluster.app.backup
    if not restoring(ctx) or spec is None or spec.restore is None:
        return
    roles = ctx.cluster.app.backup_roles()
    chosen = [n for n in node_ids if split_id(n)[0] in roles]
    if chosen:
        plan.then(as_step("restore", run_restore, ctx, chosen, timeout=spec.restore.timeout + STEP_MARGIN))
