"""An upgrade's steps: a batch of nodes moved to the new version, gated, and undone on failure.

Two job contexts are at hand in each step: the job's own (the cluster on its current version)
and the *target* (:func:`target_context`: the same cluster with the new spec and the migrated
env). Whatever a step does for the new version it does through the target, so publishing,
services and instance creation need no knowledge of upgrades.

In place, a node gets the new version's templates by a command its agent runs (the same files
userdata writes at boot, so it works on both channels: a silent agent on channel ssh runs it over
SSH), then the new env in its own view (host env and a staged role env, as an env rollout does);
the write moves its view's revision, its agent renders the new templates, and the batch waits for
a clean apply. Then the role's ``upgrade`` service, then the health gate. Replace rebuilds each
node of a batch from the new image on its kept volume (:func:`upgrade_replace`).
"""

from __future__ import annotations

import dataclasses
import shlex

from pitrix.metad import keyspace as ks
from pitrix.providers.base import ProviderError
from pitrix.runtime import userdata
from pitrix.runtime.records import Node
from pitrix.runtime.spec import AppSpec, Service, ServiceName
from pitrix.runtime.steps import agents, instances, publishing, restarts, services, volumes
from pitrix.runtime.steps.context import JobContext, OperationError, RolledBack
from pitrix.runtime.steps.nodes import members, split_id
from pitrix.runtime.steps.ordering import ordered
from pitrix.runtime.steps.rollout import Revisions, await_batch, rollout_batches

TEMPLATES_TIMEOUT = 60
UPGRADE_SERVICES = ("upgrade", "rollback")


def target_context(ctx: JobContext, target: AppSpec, env: dict[str, dict[str, str]]) -> JobContext:
    """``ctx`` seeing the cluster on the new version: its spec (``upgrade`` and ``rollback``
    commands told both versions) and the migrated env."""
    versions = {"PITRIX_FROM_VERSION": ctx.cluster.app.version, "PITRIX_TO_VERSION": target.version}
    roles = []
    for role in target.roles:
        told = {
            name: svc.model_copy(update={"cmd": services.command_line(svc.cmd, versions)})
            if name in UPGRADE_SERVICES
            else svc
            for name, svc in role.services.items()
        }
        roles.append(role.model_copy(update={"services": told}))
    app = target.model_copy(update={"roles": roles})
    return dataclasses.replace(ctx, cluster=ctx.cluster.model_copy(update={"app": app, "env": env}))


# -- batches ---------------------------------------------------------------------------------------


async def role_order(ctx: JobContext, role: str, node_ids: list[str]) -> list[str]:
    """The role's nodes in the order they upgrade: its ``ordering`` (leader last), else by index."""
    return await ordered(ctx, role, sorted(node_ids, key=lambda n: split_id(n)[1]))


def _earlier_roles(by_role: dict[str, list[str]], role: str) -> list[str]:
    """The nodes of the roles upgraded before ``role`` (roles go in the order ``by_role`` lists)."""
    done: list[str] = []
    for name, node_ids in by_role.items():
        if name == role:
            break
        done += node_ids
    return done


async def batch_of(
    ctx: JobContext, target: JobContext, by_role: dict[str, list[str]], role: str, number: int
) -> tuple[list[str], list[str]]:
    """Batch ``number`` (from 1) of ``role``, and every node upgraded before it (earlier roles'
    and this role's earlier batches), chosen when the step runs: ordering asks the live app."""
    canary, size = _policy(target.cluster.app)
    done = _earlier_roles(by_role, role)
    order = await role_order(ctx, role, by_role[role])
    batches = rollout_batches(order, canary, size)
    for earlier in batches[: number - 1]:
        done += earlier
    return (batches[number - 1] if number <= len(batches) else []), done


async def rebuilt_batch_of(
    ctx: JobContext,
    target: JobContext,
    by_role: dict[str, list[str]],
    role: str,
    number: int,
    instances: dict[str, str],
) -> tuple[list[str], list[str]]:
    """As :func:`batch_of` for ``replace``, where a node's instance changes once it is rebuilt:
    the nodes done are those no longer on the instance they had when the upgrade was accepted,
    and the batch is taken from the others. The order is asked again at each batch and may come
    from a rebuilt node (its agent has no memory of the answer given before), so a node already
    rebuilt must never be picked again by position."""
    canary, size = _policy(target.cluster.app)
    done = _earlier_roles(by_role, role)
    now = {n.node_id: n.instance_id for n in await members(ctx, by_role[role])}
    rebuilt = [n for n in by_role[role] if now.get(n) != instances.get(n)]
    left = [n for n in await role_order(ctx, role, by_role[role]) if n not in rebuilt]
    take = canary if number == 1 and canary else size
    return left[:take], done + rebuilt


def _policy(app: AppSpec) -> tuple[int, int]:
    policy = app.upgrade
    return (policy.canary, policy.max_in_flight) if policy else (1, 1)


def batch_count(target: AppSpec, count: int) -> int:
    canary, size = _policy(target)
    return len(rollout_batches([str(i) for i in range(count)], canary, size))


# -- in place --------------------------------------------------------------------------------------


def templates_command(app: AppSpec, role: str) -> str:
    """Shell that puts the role's templates of ``app`` in place of the app's current ones."""
    files: dict[str, bytes] = {}
    for template in app.role(role).templates:
        files.update(userdata.template_files(template))
    conf, tmpl = f"{userdata.CONFD_DIR}/conf.d", f"{userdata.CONFD_DIR}/templates"
    lines = [
        'ROOT="${PITRIX_VM_ROOT:-}"',
        f'mkdir -p "$ROOT"{conf} "$ROOT"{tmpl}',
        f'rm -f "$ROOT"{conf}/app-*.toml "$ROOT"{tmpl}/app-*.tmpl',
    ]
    if files:
        lines.append(userdata.write_files_script(files))
    lines.append(f"echo templates of {shlex.quote(app.version)}")
    return "\n".join(lines)


async def deliver_templates(ctx: JobContext, nodes: list[Node], label: str) -> None:
    """Each node's role templates of ``ctx``'s app on its disk (read at its agent's next round)."""
    targets = [
        (node, Service(cmd=templates_command(ctx.cluster.app, node.role), timeout=TEMPLATES_TIMEOUT))
        for node in nodes
    ]
    if targets:
        results = await services.run_commands(ctx, label, targets)
        services.raise_failures("templates not written", nodes, results)


async def give_env(ctx: JobContext, nodes: list[Node]) -> Revisions:
    """Each node's view takes ``ctx``'s env: its host env and a staged copy of its role's env
    (both replaced whole: a parameter the version dropped goes); the revisions to apply."""
    env = publishing.role_env(ctx)
    revisions: Revisions = {}
    for node in nodes:
        mine = publishing.node_env(ctx, node.role)
        where = f"{publishing.host_path(ctx, node)}/env"
        await (ctx.metad.post_data(where, mine) if mine else ctx.metad.delete_data(where))
        revisions[node.instance_id] = await ctx.metad.post_data(
            ks.staged_env(ctx.cid, node.instance_id), env.get(node.role, {})
        )
    return revisions


async def take_env_back(ctx: JobContext, nodes: list[Node]) -> Revisions:
    """The nodes' host env as ``ctx`` (the current version) has it, their staged copy gone."""
    revisions: Revisions = {}
    for node in nodes:
        mine = publishing.node_env(ctx, node.role)
        where = f"{publishing.host_path(ctx, node)}/env"
        await (ctx.metad.post_data(where, mine) if mine else ctx.metad.delete_data(where))
        revisions[node.instance_id] = await ctx.metad.delete_data(ks.staged_env(ctx.cid, node.instance_id))
    return revisions


async def _in_order(ctx: JobContext, node_ids: list[str]) -> list[Node]:
    """The nodes' records in the order given (``members`` sorts them by role and index)."""
    found = {n.node_id: n for n in await members(ctx, node_ids)}
    return [found[n] for n in node_ids if n in found]


def _failed(failures: dict[str, str]) -> str:
    return "; ".join(f"{node_id}: {why}" for node_id, why in failures.items())


async def _move(ctx: JobContext, nodes: list[Node], label: str) -> None:
    """``nodes`` onto ``ctx``'s version: templates, env, its upgrade service, health."""
    await deliver_templates(ctx, nodes, f"{label}-templates")
    failures = await await_batch(ctx, nodes, await give_env(ctx, nodes), health=False)
    if failures:
        raise OperationError(f"new templates not applied: {_failed(failures)}")
    await services.run_service(ctx, "upgrade", [n.node_id for n in nodes])
    await restarts.healthy_after(ctx, nodes, f"the upgrade to {ctx.cluster.app.version}")


async def upgrade_in_place(
    ctx: JobContext, target: JobContext, by_role: dict[str, list[str]], role: str, number: int
) -> str:
    """Batch ``number`` of ``role`` moved to the new version in place; on a failure every node
    moved so far is moved back (:func:`roll_back_in_place`) and the step fails with RolledBack."""
    chosen, done = await batch_of(ctx, target, by_role, role, number)
    if not chosen:
        return "no nodes left for this batch"
    nodes = await members(ctx, chosen)
    try:
        await _move(target, nodes, f"upgrade-{role}-{number}")
    except OperationError as exc:
        touched = await _in_order(ctx, [*done, *chosen])
        ctx.log.warning(
            "upgrade batch failed; rolling back", error=str(exc), nodes=[n.node_id for n in touched]
        )
        await roll_back_in_place(ctx, target, touched, f"rollback-{role}-{number}")
        raise RolledBack(
            f"{exc}; {len(touched)} node(s) back on {ctx.cluster.app.version}: "
            f"{', '.join(n.node_id for n in touched)}"
        ) from None
    return f"{', '.join(chosen)} on {target.cluster.app.version}"


async def roll_back_in_place(ctx: JobContext, target: JobContext, nodes: list[Node], label: str) -> None:
    """Node after node (the failed batch first, so a quorum app loses one member at a time): the
    new version's ``rollback`` service where its role has one; the current version's templates
    and env again, applied cleanly; for roles without ``rollback``, the current version's restart;
    then its health. Errors here fail the job (not a clean rollback)."""
    for node in reversed(nodes):
        if "rollback" in target.cluster.app.role(node.role).services:
            await services.run_service(target, "rollback", [node.node_id])
            restart: list[ServiceName] = []
        else:
            restart = restarts.restart_services(ctx.cluster, node.role)
        await deliver_templates(ctx, [node], f"{label}-templates")
        failures = await await_batch(ctx, [node], await take_env_back(ctx, [node]), health=False)
        if failures:
            raise OperationError(f"rolling back: previous templates not applied: {_failed(failures)}")
        for service in restart:
            await services.run_service(ctx, service, [node.node_id])
        await restarts.healthy_after(ctx, [node], "the rollback")


async def commit_upgrade(ctx: JobContext, target: JobContext, node_ids: list[str]) -> str:
    """Every node is on the new version: the roles' env, the cluster entry (its version) and the
    hosts take it, then the staged copies go (each node's view reads the same before and after)."""
    env = publishing.role_env(target)
    for role in target.cluster.app.roles:
        values = env.get(role.name)
        where = ks.env(ctx.cid, role.name)
        await (ctx.metad.post_data(where, values) if values else ctx.metad.delete_data(where))
    detail = await publishing.register(target, node_ids)
    for node in await members(ctx, node_ids):
        if node.instance_id:
            await ctx.metad.delete_data(ks.staged_env(ctx.cid, node.instance_id))
    return f"{detail}; cluster on {target.cluster.app.version}"


# -- replace ---------------------------------------------------------------------------------------


async def _rebuild(ctx: JobContext, before: JobContext, nodes: list[Node], *, forward: bool) -> None:
    """Each node's instance terminated and created again (same name) from ``ctx``'s image, its
    volume re-attached (kept: a volume with a filesystem is mounted, not formatted), its agent up
    (``before``: the version they run now, whose ``stop`` stops them); then the new version's
    ``upgrade`` (``forward``) or, rebuilding back, its ``rollback`` (run in place of ``init`` on
    kept data: the node may have a new address), and ``start``, then health. Roles without a
    volume run ``init`` as on a create."""
    ids = [n.node_id for n in nodes]
    current = {n.node_id: n.instance_id for n in await members(ctx, ids) if n.instance_id}
    running = [n for n in ids if n in current]
    if running:
        await services.run_service(before, "stop", running)
        await publishing.unregister_instances(ctx, {n: current[n] for n in running})
        await instances.terminate_instances(ctx, {n: current[n] for n in running})
        await instances.forget_instances(ctx, {n: current[n] for n in running})
    await instances.run_instances(ctx, ids)
    await instances.wait_running(ctx, ids)
    kept = volumes.with_volumes(ctx.cluster, ids)
    if kept:
        await volumes.attach_volumes(ctx, kept)
    await publishing.register(ctx, ids)
    if ctx.over_ssh:
        await agents.bootstrap_agents(ctx, ids)
    await agents.wait_agents(ctx, ids)
    if kept:
        await volumes.prepare_volumes(ctx, kept)
    fresh = [n for n in ids if n not in kept]
    if fresh:
        await services.run_service(ctx, "init", fresh)
    if forward:
        await services.run_service(ctx, "upgrade", ids)
    else:
        await services.run_service(before, "rollback", ids)
    await services.run_service(ctx, "start", ids)
    await restarts.healthy_after(ctx, await members(ctx, ids), f"the rebuild on {ctx.cluster.app.version}")


async def upgrade_replace(
    ctx: JobContext,
    target: JobContext,
    by_role: dict[str, list[str]],
    role: str,
    number: int,
    instances: dict[str, str],
) -> str:
    """Batch ``number`` of ``role`` rebuilt from the new version's image; on a failure every node
    rebuilt so far (this batch and those before) is rebuilt from the current image, and the step
    fails with RolledBack. ``instances``: each node's instance when the upgrade was accepted.

    The rebuilds back go node after node, the failed batch first, each healthy before the next is
    stopped (as :func:`roll_back_in_place`): rebuilding them all at once stops them all at once, and
    a quorum app loses its quorum while the rollback service needs it (etcd's ``member update``
    of a rebuilt member's address, with two of three members down, can never commit)."""
    chosen, done = await rebuilt_batch_of(ctx, target, by_role, role, number, instances)
    if not chosen:
        return "no nodes left for this batch"
    nodes = await members(ctx, chosen)
    try:
        await _rebuild(target, ctx, nodes, forward=True)
    except (OperationError, ProviderError) as exc:
        touched = await _in_order(ctx, [*done, *chosen])
        ctx.log.warning(
            "replace batch failed; rebuilding", error=str(exc), nodes=[n.node_id for n in touched]
        )
        for node in reversed(touched):
            await _rebuild(ctx, target, [node], forward=False)
        raise RolledBack(
            f"{exc}; {len(touched)} node(s) rebuilt on {ctx.cluster.app.version}: "
            f"{', '.join(n.node_id for n in touched)}"
        ) from None
    return f"{', '.join(chosen)} rebuilt on {target.cluster.app.version}"
