"""An env change rolled out batch by batch, each gated on its nodes' clean apply and health,
undone on failure.

A batch's nodes get the new values in both places a template may read them: their host entry's
env (``/self/host/env``, no passwords: hosts are seen cluster-wide) and a staged copy of their
role's env (``/clusters/<cid>/staged-env/<iid>``, which metad shows as that node's ``/self/env``
only, passwords included). So templates reading ``/env/<key>`` (AppCenter's layout) follow the
canary and the batches like those reading ``/host/env/<key>``, and the role's own env is written
only once every node has passed. A rollback deletes the staged copies: the nodes see the role's
env, still the old values, again.
"""

from __future__ import annotations

from collections.abc import Callable

from pitrix.metad import keyspace as ks
from pitrix.runtime.records import Node
from pitrix.runtime.steps import publishing
from pitrix.runtime.steps.agents import AGENT_TIMEOUT, health_timeout, health_verdict
from pitrix.runtime.steps.context import JobContext, OperationError, RolledBack
from pitrix.runtime.steps.nodes import members
from pitrix.runtime.steps.publishing import host_path, node_env, role_env


def rollout_batches(node_ids: list[str], canary: int, max_in_flight: int) -> list[list[str]]:
    """The canary batch (if any), then batches of ``max_in_flight`` nodes."""
    batches = [node_ids[:canary]] if canary else []
    rest = node_ids[canary:]
    batches += [rest[i : i + max_in_flight] for i in range(0, len(rest), max_in_flight)]
    return [b for b in batches if b]


# What each node must have applied: the revision of the last write to its own view, by instance.
Revisions = dict[str, int]


async def _give_env(ctx: JobContext, nodes: list[Node], values: dict[str, dict[str, str]]) -> Revisions:
    """Give each node the new values (host env and staged role env); the revisions to apply.

    A node's staged env is in its view only, so another node's later write need not move its
    view's revision: each node is held to its own write.
    """
    revisions: Revisions = {}
    for node in nodes:
        changed = values.get(node.role, {})
        await ctx.metad.put_data(host_path(ctx, node), {"env": node_env(ctx, node.role, changed)})
        staged = dict(role_env(ctx).get(node.role, {}), **changed)
        revisions[node.instance_id] = await ctx.metad.post_data(
            ks.staged_env(ctx.cid, node.instance_id), staged
        )
    return revisions


async def _take_env_back(
    ctx: JobContext, nodes: list[Node], previous: dict[str, dict[str, str]]
) -> Revisions:
    """The nodes' previous values: host env restored, staged copy gone (the role's env shows)."""
    revisions: Revisions = {}
    for node in nodes:
        env = node_env(ctx, node.role, previous.get(node.role, {}))
        await ctx.metad.put_data(host_path(ctx, node), {"env": env})
        revisions[node.instance_id] = await ctx.metad.delete_data(ks.staged_env(ctx.cid, node.instance_id))
    return revisions


def _applied(ctx: JobContext, node: Node, revision: int) -> bool | str:
    """True once applied cleanly at ``revision`` or later; the failure text if applied badly."""
    applied = ctx.agents.applied(node.instance_id)
    if int(applied.get("revision") or 0) < revision:
        return False
    resources = applied.get("resources") or {}
    bad = [
        f"{name}: {(result or {}).get('error') or 'failed'}"
        for name, result in sorted(resources.items())
        if not isinstance(result, dict) or not result.get("ok")
    ]
    return "; ".join(bad) if bad else True


def _healthy(ctx: JobContext, node: Node) -> bool | str:
    """Its health since its apply was reported (``health_verdict``)."""
    since = ctx.agents.revisions.get(node.instance_id, {}).get(ks.APPLIED, 0)
    verdict = health_verdict(ctx, node, since)
    return f"unhealthy after the change: {verdict}" if isinstance(verdict, str) else verdict


async def _await(
    ctx: JobContext, nodes: list[Node], judge: Callable[[Node], bool | str], timeout: float, late: str
) -> dict[str, str]:
    """Until ``judge`` has a verdict on every node: the failures by node id (empty: all passed)."""

    def settled(_: object) -> bool:
        return all(judge(n) is not False for n in nodes)

    try:
        await ctx.agents.wait_for(settled, timeout)
    except TimeoutError:
        return {n.node_id: late for n in nodes if judge(n) is False}
    failures: dict[str, str] = {}
    for node in nodes:
        result = judge(node)
        if isinstance(result, str):
            failures[node.node_id] = result
    return failures


async def await_batch(
    ctx: JobContext, nodes: list[Node], revisions: Revisions, *, health: bool
) -> dict[str, str]:
    """Until every node applied its revision (and, with ``health``, passed its check after)."""
    failures = await _await(
        ctx,
        nodes,
        lambda n: _applied(ctx, n, revisions[n.instance_id]),
        AGENT_TIMEOUT,
        f"did not apply the change within {AGENT_TIMEOUT:.0f}s",
    )
    if failures or not health:
        return failures
    deadline = health_timeout(ctx, nodes)
    return await _await(
        ctx, nodes, lambda n: _healthy(ctx, n), deadline, f"not healthy within {deadline:.0f}s of applying"
    )


async def roll_env(
    ctx: JobContext,
    batch: list[str],
    done_before: list[str],
    values: dict[str, dict[str, str]],
    previous: dict[str, dict[str, str]],
) -> str:
    """Give ``batch`` the new values and wait until each node applied them cleanly and is healthy.

    On a failure, every node touched so far (this batch and those before it) gets its previous
    values back, and the step fails with :class:`RolledBack` naming the node and resource.
    """
    nodes = await members(ctx, batch)
    revisions = await _give_env(ctx, nodes, values)
    failures = await await_batch(ctx, nodes, revisions, health=True)
    if not failures:
        return f"{', '.join(n.node_id for n in nodes)} applied revision {max(revisions.values())}"
    touched = await members(ctx, [*done_before, *batch])
    ctx.log.warning("env rollout failed; restoring", failures=failures, nodes=[n.node_id for n in touched])
    restored = await _take_env_back(ctx, touched, previous)
    after = await await_batch(ctx, touched, restored, health=False)
    reason = "; ".join(f"{node_id}: {why}" for node_id, why in failures.items())
    if after:
        problems = "; ".join(f"{node_id}: {why}" for node_id, why in after.items())
        raise OperationError(f"{reason}; restoring the previous values failed too: {problems}")
    raise RolledBack(f"{reason}; previous values restored on {len(touched)} node(s)")


async def commit_env(ctx: JobContext, node_ids: list[str], values: dict[str, dict[str, str]]) -> str:
    """Every node has the new values: the roles' env takes them, then the staged copies go
    (each node's ``/self/env`` shows the same values before and after)."""
    detail = await publishing.commit_env(ctx, values)
    for node in await members(ctx, node_ids):
        if node.instance_id:
            await ctx.metad.delete_data(ks.staged_env(ctx.cid, node.instance_id))
    return detail
