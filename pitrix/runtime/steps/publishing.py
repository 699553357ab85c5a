"""Everything the runtime writes to metad about a cluster: its data, hosts, env and mappings."""

from __future__ import annotations

from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.runtime import params
from pitrix.runtime.keys import CLUSTERS
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.resources import role_size
from pitrix.runtime.spec import AppSpec
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.identity import bootstrap_token, mapping, token_fields
from pitrix.runtime.steps.nodes import members, nodes, save


def role_env(ctx: JobContext) -> dict[str, dict[str, str]]:
    """Each role's effective env: the cluster-level parameters, then its own over them (each the
    spec's defaults overlaid with the cluster's values); see :func:`params.effective`."""
    env: dict[str, dict[str, str]] = {}
    for role in ctx.cluster.app.roles:
        merged = params.effective(ctx.cluster.app, ctx.cluster.env, role.name)
        if merged:
            env[role.name] = merged
    return env


def node_env(ctx: JobContext, role_name: str, values: dict[str, str] | None = None) -> dict[str, str]:
    """What a node of the role publishes as ``/self/host/env``: its effective parameters.

    Every node carries its own copy so an env change can reach a canary node before the rest;
    passwords stay out of it (hosts are visible cluster-wide) and live only in the role's env.
    """
    role = ctx.cluster.app.role(role_name)
    merged = role_env(ctx).get(role_name, {})
    if values:
        merged = dict(merged, **values)
    declared = {**ctx.cluster.app.env, **role.env}  # the role's own win over the cluster-level
    return {k: v for k, v in merged.items() if k in declared and declared[k].type != "password"}


def host_entry(ctx: JobContext, node: Node) -> dict[str, Any]:
    """The node as published under ``hosts/<role>/<instance id>``."""
    size = role_size(ctx.cluster, node.role)  # the spec's, or as a resize left the role
    env = node_env(ctx, node.role)
    return {
        **({"env": env} if env else {}),
        "instance_id": node.instance_id,
        "ip": node.ip,
        "sid": str(node.index),
        "gid": node.role,
        "node_id": node.node_id,
        "role": node.role,
        "cpu": str(size.cpu),
        "memory": str(size.memory),
        "status": "active",
    }


def host_path(ctx: JobContext, node: Node) -> str:
    return ks.host(ctx.cid, node.role, node.instance_id)


def cluster_entry(ctx: JobContext) -> dict[str, Any]:
    """The cluster as published under ``cluster``."""
    return {
        "cluster_id": ctx.cid,
        "app_id": ctx.cluster.app.name,
        "app_version": ctx.cluster.app.version,
        "owner": ctx.cluster.owner,
        "runtime": ctx.cluster.runtime,
        "global_uuid": ctx.cid,
    }


async def register(
    ctx: JobContext, node_ids: list[str], *, adding: bool = False, replaces: dict[str, str] | None = None
) -> str:
    """Publish the cluster and the nodes to metad, then map each instance to its /self view.

    ``adding``: the nodes also appear under ``adding-hosts``; ``replaces`` (recover: node id →
    the instance it replaces) adds ``replaces`` to those entries, so a replacement knows it is one.
    """
    wanted = await members(ctx, node_ids)
    hosts: dict[str, dict[str, Any]] = {}
    for node in wanted:
        hosts.setdefault(node.role, {})[node.instance_id] = host_entry(ctx, node)
    data: dict[str, Any] = {"cluster": cluster_entry(ctx), "hosts": hosts}
    env = role_env(ctx)
    if env:
        data["env"] = env
    health = {
        role.name: {
            "cmd": check.cmd,
            "interval": str(check.interval),
            "timeout": str(check.timeout),
            "unhealthy_threshold": str(check.unhealthy_threshold),
            "action_cmd": check.action_cmd,
            "action_timeout": str(check.action_timeout),
        }
        for role in ctx.cluster.app.roles
        if (check := role.health_check) is not None
    }
    if health:  # the agent's /self/health once metad projects it; agent.toml carries it until then
        data["health"] = health
    data.update(monitor_section(ctx.cluster.app))
    if ctx.cluster.app.endpoints:
        data["endpoints"] = {
            name: {"port": str(e.port), "protocol": e.protocol}
            for name, e in ctx.cluster.app.endpoints.items()
        }
    if ctx.cluster.links:  # metad shows a link only while both clusters have the same owner
        data["links"] = dict(ctx.cluster.links)
    if adding:
        added = {role: dict(entries) for role, entries in hosts.items()}
        for node in wanted:
            if replaces and node.node_id in replaces:
                entry = hosts[node.role][node.instance_id]
                added[node.role][node.instance_id] = {**entry, "replaces": replaces[node.node_id]}
        data[ks.ADDING_HOSTS] = added
    for node in wanted:
        fields = mapping(ctx, node)
        if ctx.tls:
            fields.update(token_fields(await bootstrap_token(ctx, node.node_id)))
        await ctx.metad.put_mapping(node.instance_id, fields)
    await ctx.metad.put_data(ks.cluster(ctx.cid), data)
    for node in wanted:
        if node.status != "registered":
            await save(ctx, node.model_copy(update={"status": "registered"}))
    return f"registered {len(wanted)} nodes"


async def mark_leaving(ctx: JobContext, node_ids: list[str]) -> str:
    wanted = await members(ctx, node_ids)
    deleting: dict[str, dict[str, Any]] = {}
    for node in wanted:
        deleting.setdefault(node.role, {})[node.instance_id] = host_entry(ctx, node)
        if node.status != "leaving":
            await save(ctx, node.model_copy(update={"status": "leaving"}))
    if deleting:
        await ctx.metad.put_data(ks.cluster(ctx.cid), {ks.DELETING_HOSTS: deleting})
    return f"{len(wanted)} nodes leaving"


async def _forget_instance(ctx: JobContext, role: str, instance_id: str, why: str) -> None:
    """An instance leaves the metadata: its certificates first, so it can read nothing more."""
    if ctx.tls:
        await ctx.metad.revoke_instance(instance_id, why)
    await ctx.metad.delete_data(ks.host(ctx.cid, role, instance_id))
    await ctx.metad.delete_data(ks.staged_env(ctx.cid, instance_id))
    await ctx.metad.delete_data(ks.cmd(ctx.cid, instance_id))
    await ctx.metad.delete_mapping(instance_id)
    await ctx.metad.delete_data(ks.instance_status(ctx.cid, instance_id))


async def unregister(ctx: JobContext, node_ids: list[str]) -> str:
    """Remove the nodes from the metadata (hosts, commands, mappings, reported status)."""
    for node in await members(ctx, node_ids):
        if node.instance_id:
            await _forget_instance(ctx, node.role, node.instance_id, f"{ctx.job.action} {ctx.job.id}")
    return "unregistered"


async def unregister_instances(ctx: JobContext, old: dict[str, str]) -> str:
    """Remove replaced instances (``{node_id: instance_id}``) from the metadata."""
    for node_id, instance_id in old.items():
        await _forget_instance(ctx, node_id.rsplit("-", 1)[0], instance_id, f"replaced by {ctx.job.id}")
    return f"unregistered {', '.join(sorted(old.values()))}"


async def unregister_cluster(ctx: JobContext) -> str:
    for node in await nodes(ctx):
        if node.instance_id:
            if ctx.tls:
                await ctx.metad.revoke_instance(node.instance_id, f"cluster deleted by {ctx.job.id}")
            await ctx.metad.delete_mapping(node.instance_id)
    await ctx.metad.delete_data(ks.cluster(ctx.cid))
    await ctx.metad.delete_data(ks.cluster_status(ctx.cid))
    return "metadata removed"


async def clear(ctx: JobContext, section: str) -> str:
    await ctx.metad.delete_data(ks.section(ctx.cid, section))
    return f"cleared {section}"


async def commit_env(ctx: JobContext, values: dict[str, dict[str, str]]) -> str:
    """The roles' own env (``/self/env``) takes the new values once every node has them."""
    revision = 0
    for role, changed in values.items():
        revision = await ctx.metad.put_data(ks.env(ctx.cid, role), changed)
    return f"role env at revision {revision}"


async def release_metadata(ctx: JobContext) -> str:
    """The metadata cluster goes with the last cluster it serves (unless its runtime keeps it)."""
    if ctx.fleet is None:
        raise OperationError("no metadata clusters to release from (the job context has no fleet)")
    kvs, _ = await ctx.store.get_prefix(CLUSTERS)
    others = [c for c in (Cluster.model_validate_json(kv.value) for kv in kvs) if c.id != ctx.cid]
    removed = await ctx.fleet.release(ctx.cluster.owner, ctx.cluster.runtime, others)
    return "metadata cluster removed" if removed else "metadata cluster kept (in use or by policy)"


def monitor_section(app: AppSpec) -> dict[str, Any]:
    """``{"monitor": {role: ...}}`` for the roles with a monitor, else nothing: each node's agent
    reads its role's as ``/self/monitor`` (the command, how often, and the items it may report)."""
    monitors = {
        role.name: {
            "cmd": monitor.cmd,
            "interval": str(monitor.interval),
            "timeout": str(monitor.timeout),
            "items": {
                name: {"unit": item.unit, "kind": item.kind, "description": item.description}
                for name, item in monitor.items.items()
            },
        }
        for role in app.roles
        if (monitor := role.monitor) is not None
    }
    return {ks.MONITOR: monitors} if monitors else {}
