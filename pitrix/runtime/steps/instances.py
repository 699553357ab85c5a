"""The nodes' instances in the cloud: created by name, booted, stopped, started, terminated."""

from __future__ import annotations

from pitrix.providers.base import InstanceSpec
from pitrix.runtime.booting import wait_booted
from pitrix.runtime.keys import node_key, token_key
from pitrix.runtime.passphraseless import identity_script
from pitrix.runtime.records import Node
from pitrix.runtime.resources import role_size
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.identity import agent_files, bootstrap_token
from pitrix.runtime.steps.nodes import members, nodes, save, save_all
from pitrix.runtime.userdata import agent_userdata
from pitrix.store.types import Op

BOOT_TIMEOUT = 300.0


async def run_instances(ctx: JobContext, node_ids: list[str]) -> str:
    """Create the nodes' instances, after looking each one up by its name."""
    wanted = await members(ctx, node_ids)
    existing = {i.name: i for i in await ctx.provider.describe_instances(name_prefix=f"{ctx.cid}-")}
    to_create: list[Node] = []
    for node in wanted:
        found = existing.get(node.name)
        if found is not None:
            if node.instance_id != found.instance_id:
                await save(
                    ctx, node.model_copy(update={"instance_id": found.instance_id, "status": "created"})
                )
        else:
            to_create.append(node)
    if not to_create:
        return f"{len(wanted)} instances already exist"
    # Channel ssh: the agent comes over SSH once the instance is known (bootstrap_agents), so
    # the instance gets no userdata; rest: userdata boots the agent. Either way it gets pitrixd's
    # public key (the one its metadata VMs already get): `pitrix nodes ssh` opens a shell with it.
    key_pair = (await ctx.key_pair()).cloud_id
    tokens = {n.node_id: await bootstrap_token(ctx, n.node_id) for n in to_create if not ctx.over_ssh}
    specs = [
        InstanceSpec(
            name=node.name,
            image=ctx.cluster.app.role(node.role).image_for(ctx.provider.name),
            cpu=role_size(ctx.cluster, node.role).cpu,
            memory=role_size(ctx.cluster, node.role).memory,
            instance_type=role_size(ctx.cluster, node.role).instance_type,
            userdata=""
            if ctx.over_ssh
            else agent_userdata(
                agent_files(ctx, node.role, tokens[node.node_id], node_id=node.node_id),
                identity_script(ctx, node.role),
            ),
            key_pair=key_pair,
            # The runtime's network (a QingCloud vxnet...); "" leaves the provider's default.
            network=ctx.runtime.network if ctx.runtime is not None else "",
            tags={
                "pitrix:cluster": ctx.cid,
                "pitrix:owner": ctx.cluster.owner,
                "pitrix:node": node.node_id,
            },
        )
        for node in to_create
    ]
    created = await ctx.provider.run_instances(specs)
    by_name = {i.name: i for i in created}
    returned = [n for n in to_create if n.name in by_name]
    await save_all(
        ctx,
        (
            n.model_copy(update={"instance_id": by_name[n.name].instance_id, "status": "created"})
            for n in returned
        ),
    )
    for node in to_create:
        if node.name not in by_name:
            raise OperationError(f"node {node.node_id}: the cloud did not return instance {node.name}")
    return f"created {len(to_create)} instances"


async def wait_running(ctx: JobContext, node_ids: list[str]) -> str:
    wanted = await members(ctx, node_ids)
    missing = [n.node_id for n in wanted if not n.instance_id]
    if missing:
        raise OperationError(f"nodes {', '.join(missing)} have no instance")
    instances = await wait_booted(ctx.provider, [n.instance_id for n in wanted], BOOT_TIMEOUT)
    by_id = {i.instance_id: i for i in instances}
    changed = [
        node.model_copy(update={"ip": ip, "status": "running"})
        for node in wanted
        if node.ip != (ip := by_id[node.instance_id].private_ip) or node.status == "created"
    ]
    await save_all(ctx, changed)
    return f"{len(wanted)} running"


async def _instance_ids(ctx: JobContext, node_ids: list[str]) -> list[str]:
    wanted = await members(ctx, node_ids)
    missing = [n.node_id for n in wanted if not n.instance_id]
    if missing:
        raise OperationError(f"nodes {', '.join(missing)} have no instance")
    return [n.instance_id for n in wanted]


async def stop_instances(ctx: JobContext, node_ids: list[str]) -> str:
    """Stop the nodes' instances (the provider skips those already stopped)."""
    ids = await _instance_ids(ctx, node_ids)
    await ctx.provider.stop_instances(ids)
    return f"{len(ids)} instances stopped"


async def start_instances(ctx: JobContext, node_ids: list[str]) -> str:
    """Start the nodes' instances (the provider skips those already running)."""
    ids = await _instance_ids(ctx, node_ids)
    await ctx.provider.start_instances(ids)
    return f"{len(ids)} instances started"


async def terminate(ctx: JobContext, node_ids: list[str] | None = None) -> str:
    """Terminate the nodes' instances (all of the cluster's when ``node_ids`` is None)."""
    gone = await nodes(ctx) if node_ids is None else await members(ctx, node_ids)
    names = {n.name for n in gone}
    found = await ctx.provider.describe_instances(name_prefix=f"{ctx.cid}-")
    ids = sorted({i.instance_id for i in found if i.name in names or node_ids is None})
    if ids:
        await ctx.provider.terminate_instances(ids)
    for node in gone:
        await ctx.write(
            Op("delete", token_key(ctx.cid, node.node_id)), Op("delete", node_key(ctx.cid, node.node_id))
        )
    return f"terminated {len(ids)} instances"


async def terminate_instances(ctx: JobContext, old: dict[str, str]) -> str:
    """Terminate replaced instances (``{node_id: instance_id}``) by id; the cloud skips those gone."""
    await ctx.provider.terminate_instances(sorted(old.values()))
    return f"terminated {', '.join(sorted(old.values()))}"


async def forget_instances(ctx: JobContext, old: dict[str, str]) -> str:
    """Node records that still name a replaced instance go back to ``planned``.

    The old instance is terminated by now, so the name lookup in run-instances no longer finds
    it and creates the replacement under the same deterministic name.
    """
    reset = []
    for node in await members(ctx, list(old)):
        if node.instance_id == old[node.node_id]:
            planned = node.model_copy(update={"instance_id": "", "ip": "", "status": "planned"})
            await ctx.write(
                Op("delete", token_key(ctx.cid, node.node_id)),
                Op("put", node_key(ctx.cid, node.node_id), planned.dump()),
            )
            reset.append(node.node_id)
    return f"reset {', '.join(reset)}" if reset else "already reset"
