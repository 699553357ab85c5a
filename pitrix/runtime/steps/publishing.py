"""Everything the runtime writes to metad about a cluster: its data, hosts, env and mappings."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

from pitrix.metad import keyspace as ks
from pitrix.runtime import endpoints, params, passphraseless
from pitrix.runtime.keys import CLUSTERS
from pitrix.runtime.records import Cluster, Node, Runtime
from pitrix.runtime.resources import role_size
from pitrix.runtime.spec import AppSpec
from pitrix.runtime.steps import reserved_ips
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.identity import bootstrap_token, mapping, token_fields
from pitrix.runtime.steps.nodes import members, nodes, save, save_all


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


def appcenter(ctx: JobContext) -> bool:
    """Whether the app reads its metadata in QingCloud AppCenter's layout (docs/appcenter.md)."""
    return ctx.cluster.app.profile == "appcenter"


def host_role(ctx: JobContext, node: Node) -> str:
    """The role level of the node's host entry: "" for a role-less app (``hosts/<iid>``)."""
    return "" if ctx.cluster.app.roleless else node.role


def host_entry(ctx: JobContext, node: Node, pub_key: str = "") -> dict[str, Any]:
    """The node as published under ``hosts/<role>/<instance id>`` (``hosts/<instance id>`` for a
    role-less app, whose entries name no role); ``pub_key``: its role's passphraseless public key,
    shown to AppCenter-profile apps."""
    size = role_size(ctx.cluster, node.role)  # the spec's, or as a resize left the role
    env = node_env(ctx, node.role)
    role = host_role(ctx, node)
    entry = {
        **({"env": env} if env else {}),
        "instance_id": node.instance_id,
        "ip": node.ip,
        "sid": str(node.index),
        "gid": role,
        "node_id": node.node_id,
        "role": role,
        "cpu": str(size.cpu),
        "memory": str(size.memory),
        "status": "active",
    }
    if appcenter(ctx):
        entry.update(
            zone=_zone(ctx.runtime),
            pub_key=pub_key,
            gsid=gsid(ctx.cid, node.node_id),
            hypervisor=_setting(ctx.runtime, "hypervisor") or "kvm",
            instance_class="0",
        )
    return entry


def gsid(cid: str, node_id: str) -> str:
    """AppCenter's global server id: a 9-digit number, the same for a node through every restart
    and replacement (derived from the cluster and node ids, so nothing need be stored)."""
    digest = hashlib.sha256(f"{cid}/{node_id}".encode()).digest()
    return str(100_000_000 + int.from_bytes(digest[:8], "big") % 900_000_000)


def pub_keys(ctx: JobContext) -> dict[str, str]:
    """Each passphraseless role's public key (AppCenter profile only; others publish none)."""
    if not appcenter(ctx):
        return {}
    return {
        role.name: passphraseless.public_key(ctx, role.name)
        for role in ctx.cluster.app.roles
        if role.passphraseless
    }


def place(ctx: JobContext, tree: dict[str, Any], node: Node, entry: dict[str, Any]) -> None:
    """Put a host entry into a ``hosts``-shaped tree (hosts, adding-hosts, deleting-hosts)."""
    role = host_role(ctx, node)
    (tree.setdefault(role, {}) if role else tree)[node.instance_id] = entry


def host_tree(ctx: JobContext, wanted: list[Node], keys: dict[str, str] | None = None) -> dict[str, Any]:
    """The nodes' host entries as a ``hosts``-shaped tree (nodes without an instance left out);
    ``keys``: the roles' public keys, if the caller has them already (``pub_keys``)."""
    keys = pub_keys(ctx) if keys is None else keys
    tree: dict[str, Any] = {}
    for node in wanted:
        if node.instance_id:
            place(ctx, tree, node, host_entry(ctx, node, keys.get(node.role, "")))
    return tree


def host_path(ctx: JobContext, node: Node) -> str:
    return ks.host(ctx.cid, host_role(ctx, node), node.instance_id)


def _setting(runtime: Runtime | None, name: str) -> str:
    """A runtime setting beyond the record's fields (a provider's own), as text; "" if absent."""
    value = (runtime.model_extra or {}).get(name) if runtime is not None else None
    if isinstance(value, list):  # a list of networks: the first is the cluster's
        value = value[0] if value else None
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""


def _network(runtime: Runtime | None) -> str:
    """The runtime's network (``Runtime.network``: the vxnet its instances are made in)."""
    return runtime.network if runtime is not None else ""


def _zone(runtime: Runtime | None) -> str:
    return runtime.zone if runtime is not None else ""


def api_server(runtime: Runtime | None) -> dict[str, str]:
    """The runtime's cloud API as AppCenter shows it (host, port, protocol); empty without one."""
    endpoint = runtime.endpoint if runtime is not None else ""
    if not endpoint:
        return {}
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname:
        return {}
    protocol = parts.scheme or "https"
    return {
        "host": parts.hostname,
        "port": str(port or (80 if protocol == "http" else 443)),
        "protocol": protocol,
    }


def cluster_env(app: AppSpec, env: params.Env) -> dict[str, str]:
    """The cluster-level parameters' values (defaults, then the cluster's): AppCenter's flat env."""
    return {**app.env_defaults(), **env.get(params.CLUSTER_SCOPE, {})}


def endpoint_entries(app: AppSpec, env: params.Env) -> dict[str, dict[str, str]]:
    """The endpoints as instances read them, ports resolved as everywhere (:mod:`endpoints`)."""
    return {
        name: {"port": str(entry["port"]), "protocol": entry["protocol"]}
        for name, entry in endpoints.resolved(app, env).items()
    }


def cluster_entry(ctx: JobContext, env: params.Env | None = None) -> dict[str, Any]:
    """The cluster as published under ``cluster``; AppCenter's apps also find where they run and
    their endpoints there (``env``: the cluster's env if not the stored one)."""
    entry: dict[str, Any] = {
        "cluster_id": ctx.cid,
        "app_id": ctx.cluster.app.name,
        "app_version": ctx.cluster.app.version,
        "owner": ctx.cluster.owner,
        "runtime": ctx.cluster.runtime,
        "global_uuid": ctx.cid,
    }
    if appcenter(ctx):
        runtime = ctx.runtime
        entry.update(
            zone=_zone(runtime),
            vxnet=_network(runtime) or _setting(runtime, "vxnet") or _setting(runtime, "vxnets") or "vxnet-0",
            user_id=ctx.cluster.owner,
        )
        region = _setting(runtime, "region")
        if region:
            entry["region_id"] = region
        server = api_server(runtime)
        if server:
            entry["api_server"] = server
        endpoints = endpoint_entries(ctx.cluster.app, ctx.cluster.env if env is None else env)
        if endpoints:
            entry[ks.ENDPOINTS] = endpoints
    return entry


def env_sections(ctx: JobContext, env: params.Env | None = None) -> dict[str, Any]:
    """What the cluster's env decides beyond the roles' env: the endpoints (ports from env) and,
    for AppCenter's apps, the flat cluster-level env linking clusters read (``linked-env``)."""
    env = ctx.cluster.env if env is None else env
    data: dict[str, Any] = {}
    if ctx.cluster.app.endpoints:
        data[ks.ENDPOINTS] = endpoint_entries(ctx.cluster.app, env)
    if appcenter(ctx):
        flat = cluster_env(ctx.cluster.app, env)
        if flat:
            data[ks.LINKED_ENV] = flat
    return data


async def publish_env_sections(ctx: JobContext, changes: params.Env) -> str:
    """update_env: the endpoints (and linked env) as the changed env makes them."""
    env = {scope: dict(values) for scope, values in ctx.cluster.env.items()}
    for scope, values in changes.items():
        env.setdefault(scope, {}).update(values)
    data = env_sections(ctx, env)
    if appcenter(ctx):
        data[ks.CLUSTER] = {ks.ENDPOINTS: cluster_entry(ctx, env).get(ks.ENDPOINTS, {})}
    revision = await ctx.metad.put_data(ks.cluster(ctx.cid), data)
    return f"{', '.join(sorted(data))} at revision {revision}"


def env_publishes(app: AppSpec) -> bool:
    """Whether an env change must republish more than the roles' env (see ``env_sections``)."""
    ports_from_env = any(isinstance(e.port, str) for e in app.endpoints.values())
    return app.profile == "appcenter" or ports_from_env


async def register(
    ctx: JobContext, node_ids: list[str], *, adding: bool = False, replaces: dict[str, str] | None = None
) -> str:
    """Publish the cluster and the nodes to metad, then map each instance to its /self view.

    ``adding``: the nodes also appear under ``adding-hosts``; ``replaces`` (recover: node id →
    the instance it replaces) adds ``replaces`` to those entries, so a replacement knows it is one.
    """
    wanted = await members(ctx, node_ids)
    keys = pub_keys(ctx)
    hosts = host_tree(ctx, wanted, keys)
    data: dict[str, Any] = {"cluster": cluster_entry(ctx), "hosts": hosts}
    if reserved_ips.declared(ctx.cluster):  # the addresses reserved before registration
        for key, value in reserved_ips.published(ctx.cluster, await reserved_ips.recorded(ctx)).items():
            data["cluster"][key] = {**data["cluster"].get(key, {}), **value}
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
    data.update(env_sections(ctx))
    if ctx.cluster.links:  # metad shows a link only while both clusters have the same owner
        data["links"] = dict(ctx.cluster.links)
    if adding:
        added: dict[str, Any] = {}
        for node in wanted:
            if not node.instance_id:
                continue
            entry = host_entry(ctx, node, keys.get(node.role, ""))
            if replaces and node.node_id in replaces:
                entry["replaces"] = replaces[node.node_id]
            place(ctx, added, node, entry)
        data[ks.ADDING_HOSTS] = added
    for node in wanted:
        fields = mapping(ctx, node)
        if ctx.cluster.app.roleless:
            fields["layout"] = ks.ROLELESS
        if ctx.tls:
            fields.update(token_fields(await bootstrap_token(ctx, node.node_id)))
        await ctx.metad.put_mapping(node.instance_id, fields)
    await ctx.metad.put_data(ks.cluster(ctx.cid), data)
    await save_all(
        ctx, (n.model_copy(update={"status": "registered"}) for n in wanted if n.status != "registered")
    )
    return f"registered {len(wanted)} nodes"


async def mark_leaving(ctx: JobContext, node_ids: list[str]) -> str:
    wanted = await members(ctx, node_ids)
    deleting = host_tree(ctx, wanted)
    for node in wanted:
        if node.status != "leaving":
            await save(ctx, node.model_copy(update={"status": "leaving"}))
    if deleting:
        await ctx.metad.put_data(ks.cluster(ctx.cid), {ks.DELETING_HOSTS: deleting})
    return f"{len(wanted)} nodes leaving"


async def _forget_instance(ctx: JobContext, role: str, instance_id: str, why: str) -> None:
    """An instance leaves the metadata: its certificates first, so it can read nothing more."""
    if ctx.tls:
        await ctx.metad.revoke_instance(instance_id, why)
    await ctx.metad.delete_data(ks.host(ctx.cid, "" if ctx.cluster.app.roleless else role, instance_id))
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
