"""An env change rolled out batch by batch, each gated on its nodes' clean apply, undone on failure."""

from __future__ import annotations

from pitrix.runtime.records import Node
from pitrix.runtime.steps.agents import AGENT_TIMEOUT
from pitrix.runtime.steps.context import JobContext, OperationError, RolledBack
from pitrix.runtime.steps.nodes import members
from pitrix.runtime.steps.publishing import host_path, node_env


def rollout_batches(node_ids: list[str], canary: int, max_in_flight: int) -> list[list[str]]:
    """The canary batch (if any), then batches of ``max_in_flight`` nodes."""
    batches = [node_ids[:canary]] if canary else []
    rest = node_ids[canary:]
    batches += [rest[i : i + max_in_flight] for i in range(0, len(rest), max_in_flight)]
    return [b for b in batches if b]


async def _give_env(ctx: JobContext, nodes: list[Node], values: dict[str, dict[str, str]]) -> int:
    """Write each node's env values; the revision every node must apply (the last write's)."""
    revision = 0
    for node in nodes:
        env = node_env(ctx, node.role, values.get(node.role, {}))
        revision = await ctx.metad.put_data(host_path(ctx, node), {"env": env})
    return revision


def _converged(ctx: JobContext, node: Node, revision: int) -> bool | str:
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


async def _await_batch(ctx: JobContext, nodes: list[Node], revision: int) -> dict[str, str]:
    """Until every node applied ``revision``: the failures by node id (empty when all are clean)."""
    try:
        await ctx.agents.wait_for(
            lambda _: all(_converged(ctx, n, revision) is not False for n in nodes), AGENT_TIMEOUT
        )
    except TimeoutError:
        late = [n.node_id for n in nodes if _converged(ctx, n, revision) is False]
        return {node_id: f"did not apply revision {revision} within {AGENT_TIMEOUT:.0f}s" for node_id in late}
    failures: dict[str, str] = {}
    for node in nodes:
        verdict = _converged(ctx, node, revision)
        if isinstance(verdict, str):
            failures[node.node_id] = verdict
    return failures


async def roll_env(
    ctx: JobContext,
    batch: list[str],
    done_before: list[str],
    values: dict[str, dict[str, str]],
    previous: dict[str, dict[str, str]],
) -> str:
    """Give ``batch`` the new values and wait until each node applied them cleanly.

    On a failure, every node touched so far (this batch and those before it) gets its previous
    values back, and the step fails with :class:`RolledBack` naming the node and resource.
    """
    nodes = await members(ctx, batch)
    revision = await _give_env(ctx, nodes, values)
    failures = await _await_batch(ctx, nodes, revision)
    if not failures:
        return f"{', '.join(n.node_id for n in nodes)} applied revision {revision}"
    touched = await members(ctx, [*done_before, *batch])
    ctx.log.warning("env rollout failed; restoring", failures=failures, nodes=[n.node_id for n in touched])
    restored = await _give_env(ctx, touched, previous)
    after = await _await_batch(ctx, touched, restored)
    reason = "; ".join(f"{node_id}: {why}" for node_id, why in failures.items())
    if after:
        problems = "; ".join(f"{node_id}: {why}" for node_id, why in after.items())
        raise OperationError(f"{reason}; restoring the previous values failed too: {problems}")
    raise RolledBack(f"{reason}; previous values restored on {len(touched)} node(s)")
