"""A rolling restart's steps: one batch's services, then the gate on its health."""

from __future__ import annotations

from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.spec import ServiceName
from pitrix.runtime.steps import services
from pitrix.runtime.steps.agents import health_timeout, health_verdict
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.nodes import members, split_id
from pitrix.runtime.steps.ordering import ordered


def restart_services(cluster: Cluster, role: str) -> list[ServiceName]:
    """What restarts a node of ``role``: its ``restart`` service, else ``stop`` then ``start``
    (whichever of them it has); empty when it has none of these."""
    defined = cluster.app.role(role).services
    if "restart" in defined:
        return ["restart"]
    fallback: tuple[ServiceName, ...] = ("stop", "start")
    return [name for name in fallback if name in defined]


def batch_size(cluster: Cluster, role: str) -> int:
    """Nodes restarted at once: the ``restart`` service's ``max_in_flight`` (else ``start``'s),
    1 by default."""
    defined = cluster.app.role(role).services
    service = defined.get("restart") or defined.get("start")
    return (service.max_in_flight if service else None) or 1


async def restart_order(ctx: JobContext, role: str, node_ids: list[str]) -> list[str]:
    """The order a role's nodes restart in: the role's ``ordering`` (leader last) when it has one,
    else by index. It is asked at each batch; ``ordered`` answers one job with one order (its
    command id is the job's, and the agent keeps a command's result)."""
    by_index = sorted(node_ids, key=lambda n: split_id(n)[1])
    return await ordered(ctx, role, by_index)


async def batch(ctx: JobContext, role: str, node_ids: list[str], number: int, size: int) -> list[str]:
    """Batch ``number`` (from 1) of ``size`` nodes of ``node_ids``, in restart order."""
    order = await restart_order(ctx, role, node_ids)
    return order[(number - 1) * size : number * size]


async def restart_batch(ctx: JobContext, role: str, node_ids: list[str], number: int, size: int) -> str:
    """Restart one batch: its services in turn, each waited for on every node of the batch."""
    chosen = await batch(ctx, role, node_ids, number, size)
    details = [await services.run_service(ctx, name, chosen) for name in restart_services(ctx.cluster, role)]
    return f"{', '.join(chosen)}: {'; '.join(details)}"


async def healthy_again(ctx: JobContext, role: str, node_ids: list[str], number: int, size: int) -> str:
    """Until every node of the batch passed a health check after its restart; a node that turns
    unhealthy (past its threshold) fails the step at once, naming it and its check's output."""
    nodes = await members(ctx, await batch(ctx, role, node_ids, number, size))
    return await healthy_after(ctx, nodes, "the restart")


async def healthy_after(ctx: JobContext, nodes: list[Node], change: str) -> str:
    """Until every node (of a role with a health check) passed a check after ``change`` (made just
    before the call); OperationError naming the nodes that turned unhealthy or stayed silent."""
    checked = [n for n in nodes if ctx.cluster.app.role(n.role).health_check is not None]
    if not checked:
        return "no health checks"
    start = int((await ctx.metad.healthz())["revision"])
    deadline = health_timeout(ctx, checked)
    try:
        await ctx.agents.wait_for(
            lambda _: all(health_verdict(ctx, n, start) is not False for n in checked), deadline
        )
    except TimeoutError:
        late = [n.node_id for n in checked if health_verdict(ctx, n, start) is False]
        raise OperationError(f"not healthy within {deadline:.0f}s of {change}: {', '.join(late)}") from None
    failed = [
        f"{n.node_id} (unhealthy: {verdict})"
        for n in checked
        if isinstance(verdict := health_verdict(ctx, n, start), str)
    ]
    if failed:
        raise OperationError(f"unhealthy after {change}: {'; '.join(failed)}")
    return f"{len(checked)} nodes healthy"
