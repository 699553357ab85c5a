"""The nodes' volumes (roles with ``volume``): made and attached once the instances run, made
usable by each node's agent before ``init``, deleted once their instances are terminated.

A volume's cloud name is deterministic (``<cluster_id>-<node_id>-vol``), so every step looks it
up by name before it creates one: a step repeated after a crash finds what it made. The volume id
is kept on the node's record; stop and start leave volumes attached and mounted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pitrix.providers.base import Volume as CloudVolume
from pitrix.providers.base import VolumeSpec
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.resources import role_size
from pitrix.runtime.spec import Service, Volume
from pitrix.runtime.steps import restore
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.nodes import members, nodes, save
from pitrix.runtime.steps.services import raise_failures, run_commands
from pitrix.runtime.volume_prepare import prepare_command

SUFFIX = "-vol"
PREPARE_TIMEOUT = 300  # seconds for a node to find, format and mount its volume


def volume_name(cid: str, node_id: str) -> str:
    return f"{cid}-{node_id}{SUFFIX}"


def role_volume(cluster: Cluster, node_id: str) -> Volume | None:
    return cluster.app.role(node_id.rsplit("-", 1)[0]).volume


def with_volumes(cluster: Cluster, node_ids: list[str]) -> list[str]:
    """The nodes whose role has a volume (a plan adds volume steps only when there are some)."""
    return [n for n in node_ids if role_volume(cluster, n) is not None]


def has_volumes(cluster: Cluster) -> bool:
    return any(role.volume is not None for role in cluster.app.roles)


async def attach_volumes(ctx: JobContext, node_ids: list[str]) -> str:
    """Each node's volume, found by name or created beside its instance, attached to it."""
    wanted = await members(ctx, with_volumes(ctx.cluster, node_ids))
    if not wanted:
        return "no volumes"
    missing = [n.node_id for n in wanted if not n.instance_id]
    if missing:
        raise OperationError(f"nodes {', '.join(missing)} have no instance to attach a volume to")
    existing = {v.name: v for v in await ctx.provider.describe_volumes(name_prefix=f"{ctx.cid}-")}
    sources = await restore.volume_sources(ctx, [n.node_id for n in wanted])  # backup: a restore's

    async def one(node: Node) -> str:
        spec = role_volume(ctx.cluster, node.node_id)
        assert spec is not None
        name = volume_name(ctx.cid, node.node_id)
        volume = existing.get(name)
        if volume is None:
            volume = await ctx.provider.create_volume(
                VolumeSpec(
                    name=name,
                    size=role_size(ctx.cluster, node.role).volume_size or spec.size,
                    tags={
                        "pitrix:cluster": ctx.cid,
                        "pitrix:owner": ctx.cluster.owner,
                        "pitrix:node": node.node_id,
                    },
                    instance_id=node.instance_id,
                    snapshot_id=sources[node.node_id].snapshot_id if node.node_id in sources else "",
                )
            )
            ctx.log.info("volume.created", node=node.node_id, volume_id=volume.volume_id, size=volume.size)
        elif volume.instance_id and volume.instance_id != node.instance_id:
            # Still on an instance this node no longer has (a replaced one the cloud kept).
            await ctx.provider.detach_volume(volume.volume_id)
        attached = await ctx.provider.attach_volume(volume.volume_id, node.instance_id)
        if node.volume_id != attached.volume_id:
            await save(ctx, node.model_copy(update={"volume_id": attached.volume_id}))
        return attached.volume_id

    attached = await asyncio.gather(*(one(n) for n in wanted))
    return f"attached {', '.join(attached)}"


async def prepare_volumes(ctx: JobContext, node_ids: list[str]) -> str:
    """Each node's agent formats (if blank) and mounts its volume, as a command like a service's."""
    wanted = await members(ctx, with_volumes(ctx.cluster, node_ids))
    if not wanted:
        return "no volumes"
    unattached = [n.node_id for n in wanted if not n.volume_id or not n.instance_id]
    if unattached:
        raise OperationError(f"nodes {', '.join(unattached)} have no attached volume")
    found = {
        v.volume_id: v for v in await ctx.provider.describe_volumes(volume_ids=[n.volume_id for n in wanted])
    }
    commands: list[tuple[Node, Service]] = []
    for node in wanted:
        volume: CloudVolume | None = found.get(node.volume_id)
        if volume is None or volume.instance_id != node.instance_id or not volume.device_paths:
            raise OperationError(
                f"node {node.node_id}: volume {node.volume_id} is not attached to its instance"
            )
        spec = role_volume(ctx.cluster, node.node_id)
        assert spec is not None
        commands.append(
            (node, Service(cmd=prepare_command(spec, volume.device_paths), timeout=PREPARE_TIMEOUT))
        )
    started = time.monotonic()
    results = await run_commands(ctx, "volume", commands)
    raise_failures("volume prepare failed", wanted, results)
    return f"{len(commands)} volumes mounted in {time.monotonic() - started:.2f}s"


async def delete_volumes(ctx: JobContext, node_ids: list[str] | None = None) -> str:
    """Delete the nodes' volumes (all of the cluster's when ``node_ids`` is None), by name: their
    instances and node records may be gone already."""
    if node_ids is None:
        return await _delete_where(ctx, lambda name: True)
    names = {volume_name(ctx.cid, n) for n in node_ids}
    return await _delete_where(ctx, names.__contains__)


async def delete_left_volumes(ctx: JobContext) -> str:
    """Delete the volumes whose node has no record any more (scale-in's leavers, once terminated).

    The leavers are chosen while the job runs and their records go with their instances, so this
    step asks the cloud what is left over rather than being told: repeated after a crash, it finds
    the same volumes or none.
    """
    if not has_volumes(ctx.cluster):
        return "no volumes"
    kept = {volume_name(ctx.cid, n.node_id) for n in await nodes(ctx)}
    return await _delete_where(ctx, lambda name: name not in kept)


async def _delete_where(ctx: JobContext, doomed: Callable[[str], bool]) -> str:
    """Delete the cluster's volumes whose name ``doomed`` picks (found by name prefix)."""
    if not has_volumes(ctx.cluster):
        return "no volumes"
    found = await ctx.provider.describe_volumes(name_prefix=f"{ctx.cid}-")
    gone = [v for v in found if v.name.endswith(SUFFIX) and doomed(v.name)]
    if gone:
        await ctx.provider.delete_volumes([v.volume_id for v in gone])
    return f"deleted {', '.join(sorted(v.volume_id for v in gone))}" if gone else "no volumes left"
