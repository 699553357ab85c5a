"""A resize's steps: one batch of a role's nodes given a new size, and the role's size recorded.

A batch goes: the ``stop`` service, the instances stopped, each resized and its volume grown, the
instances started, their agents back (converged on a fresh revision), each volume's filesystem
grown by its agent, the ``start`` service. The health gate after it is the rolling restart's
(``restarts.healthy_again``). Where nothing needs a stopped instance (the provider resizes online
and the app says it may, or only volumes grow on a cloud that grows attached volumes) the services
and the instance are left running.

Every part is safe to repeat: commands have ids of the job (a re-run finds their results), the
provider skips instances already stopped or started and sizes already reached. A batch that fails
after it stopped its instances starts them again before it reports the failure, so a failed
resize leaves no node down that was up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from pydantic import BaseModel, ConfigDict

from pitrix.runtime.keys import cluster_key
from pitrix.runtime.ownership import LostOwnership
from pitrix.runtime.records import Cluster, Node, RoleResources
from pitrix.runtime.repository import Repository
from pitrix.runtime.spec import Service
from pitrix.runtime.steps import agents, instances, publishing, restarts, services
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.nodes import members
from pitrix.runtime.volume_grow import grow_command
from pitrix.store.types import Compare, Op

GROW_TIMEOUT = 300  # seconds for a node's agent to grow its filesystem
RECORD_ATTEMPTS = 5


class Target(BaseModel):
    """A role's size after the resize (every field given: what it has where the request left it),
    and which of the changes it makes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: int
    memory: int
    instance_type: str
    volume_size: int | None = None
    instance_changes: bool
    volume_grows: bool


def stops_instances(ctx: JobContext, role: str, target: Target) -> bool:
    """Whether the batch must stop its nodes: the instance changes and the provider cannot resize
    it online (or the app does not allow it), or the volume grows on a cloud that grows only
    volumes of stopped instances."""
    online = bool(getattr(ctx.provider, "online_resize", False))
    allowed = ctx.cluster.app.role(role).vertical_scaling.online
    if target.instance_changes and not (online and allowed):
        return True
    return target.volume_grows and not bool(getattr(ctx.provider, "online_volume_growth", False))


async def resize_batch(
    ctx: JobContext, role: str, node_ids: list[str], number: int, size: int, target: Target
) -> str:
    chosen = await restarts.batch(ctx, role, node_ids, number, size)
    # A re-run after a crash: nodes whose start service already succeeded in this job are done
    # (stopping them again would leave them down, start's result being cached).
    done = [n for n in await members(ctx, chosen) if _started(ctx, n)]
    if done:
        chosen = [n for n in chosen if n not in {d.node_id for d in done}]
        if not chosen:
            return f"{', '.join(d.node_id for d in done)}: resized already"
    nodes = await members(ctx, chosen)
    unplaced = [n.node_id for n in nodes if not n.instance_id]
    if unplaced:
        raise OperationError(f"nodes {', '.join(unplaced)} have no instance to resize")
    stopping = stops_instances(ctx, role, target)
    details: list[str] = []
    if stopping:
        details.append(await services.run_service(ctx, "stop", chosen))
        await instances.stop_instances(ctx, chosen)
    try:
        await _resize(ctx, nodes, target, details)
    except Exception:
        if stopping:  # no node left down by a failed resize: back at the size it has, services up
            try:
                await _boot(ctx, chosen)
                await services.run_service(ctx, "start", chosen)
            except Exception as exc:  # the failure reported is the resize's
                ctx.log.warning("resize.restart_failed", nodes=chosen, error=str(exc))
        raise
    # The nodes' /host/cpu and /host/memory say the new size from now on (templates may size the
    # app by them); the role's other nodes keep theirs until their own batch.
    sized = dataclasses.replace(ctx, cluster=with_size(ctx.cluster, role, target))
    if stopping:
        await _boot(sized, chosen)
    else:
        await publishing.register(sized, chosen)
    if target.volume_grows:
        details.append(await grow_filesystems(ctx, chosen))
    if stopping:
        details.append(await services.run_service(ctx, "start", chosen))
    return f"{', '.join(chosen)}: {'; '.join(details) or 'resized online'}"


def _started(ctx: JobContext, node: Node) -> bool:
    result = ctx.agents.command_result(node.instance_id, f"{ctx.job.id}-start-{node.node_id}")
    return bool(node.instance_id) and (result or {}).get("status") == "successful"


def with_size(cluster: Cluster, role: str, target: Target) -> Cluster:
    """The cluster as the role's resized nodes see it: the role's size is ``target``."""
    resources = RoleResources(
        cpu=target.cpu,
        memory=target.memory,
        instance_type=target.instance_type,
        volume_size=target.volume_size,
    )
    return cluster.model_copy(update={"resources": {**cluster.resources, role: resources}})


async def _boot(ctx: JobContext, node_ids: list[str]) -> None:
    """Start the instances and wait until their agents applied a fresh revision (a stopped node's
    last heartbeat may linger in metad, so a heartbeat proves nothing), as ``start`` does."""
    since = time.time()
    await instances.start_instances(ctx, node_ids)
    await instances.wait_running(ctx, node_ids)
    await publishing.register(ctx, node_ids)  # as start does: an address may change with a boot
    if ctx.over_ssh:  # the agents died with the instances
        await agents.bootstrap_agents(ctx, node_ids, fresh_since=since)
    await agents.converge(ctx, node_ids)


async def _resize(ctx: JobContext, nodes: list[Node], target: Target, details: list[str]) -> None:
    async def one(node: Node) -> None:
        if target.instance_changes:
            await ctx.provider.resize_instance(
                node.instance_id, cpu=target.cpu, memory=target.memory, instance_type=target.instance_type
            )
        if target.volume_grows:
            assert target.volume_size is not None
            if not node.volume_id:
                raise OperationError(f"node {node.node_id} has no volume to grow")
            await ctx.provider.grow_volume(node.volume_id, target.volume_size)

    results = await asyncio.gather(*(one(n) for n in nodes), return_exceptions=True)
    failed = [
        f"{n.node_id}: {r}" for n, r in zip(nodes, results, strict=True) if isinstance(r, BaseException)
    ]
    if failed:
        raise OperationError(f"resize failed on {len(failed)} node(s): {'; '.join(failed)}")
    sized = f"{target.cpu} cpu, {target.memory} MiB" + (
        f", {target.instance_type}" if target.instance_type else ""
    )
    if target.instance_changes:
        details.append(f"instances now {sized}")
    if target.volume_grows:
        details.append(f"volumes now {target.volume_size} GiB")


async def grow_filesystems(ctx: JobContext, node_ids: list[str]) -> str:
    """Each node's agent grows the filesystem on its volume to the volume's new size."""
    nodes = await members(ctx, node_ids)
    found = {
        v.volume_id: v for v in await ctx.provider.describe_volumes(volume_ids=[n.volume_id for n in nodes])
    }
    commands: list[tuple[Node, Service]] = []
    for node in nodes:
        volume = found.get(node.volume_id)
        spec = ctx.cluster.app.role(node.role).volume
        if volume is None or spec is None or not volume.device_paths:
            raise OperationError(
                f"node {node.node_id}: volume {node.volume_id} is not attached to its instance"
            )
        commands.append((node, Service(cmd=grow_command(spec, volume.device_paths), timeout=GROW_TIMEOUT)))
    results = await services.run_commands(ctx, "grow-filesystem", commands)
    services.raise_failures("filesystem growth failed", nodes, results)
    return f"{len(commands)} filesystems grown"


async def record_size(ctx: JobContext, role: str, target: Target) -> str:
    """The role's new size into the cluster record (``Cluster.resources``), as soon as all its nodes
    have it: a later failure of another role leaves this one recorded, so nodes made from now on
    (scale-out, recover) are made that size."""
    repo = Repository(ctx.store, ctx.sealer)
    resources = with_size(ctx.cluster, role, target).resources[role]
    for _ in range(RECORD_ATTEMPTS):
        cluster, read_at = await repo.read_cluster(ctx.cid)
        if cluster.resources.get(role) == resources:
            return f"{role} already recorded"
        updated = cluster.model_copy(update={"resources": {**cluster.resources, role: resources}})
        written = await ctx.store.txn(
            [Compare(cluster_key(ctx.cid), "mod", "==", read_at), *ctx.fence],
            [Op("put", cluster_key(ctx.cid), updated.dump())],
        )
        if written.succeeded:
            ctx.cluster = ctx.cluster.model_copy(update={"resources": updated.resources})
            return f"{role} recorded: {resources.model_dump(exclude_none=True)}"
        if ctx.fence and not (await ctx.store.txn(list(ctx.fence), [])).succeeded:
            raise LostOwnership(ctx.cid, "the record of a resized role was refused")
    raise OperationError(f"{role}: the cluster record kept changing; its new size is not recorded")
