"""A delete's ``stop`` and ``destroy`` services: run where they can run, failures fatal unless forced.

A node whose instance is gone, not running, or whose agent is silent cannot run a service; waiting
for it would only end at the service's timeout. Such nodes are named at once: a delete of an
``active`` cluster fails on them (its nodes should all be up), unless the request said ``force``;
a delete of a stopped or failed cluster expects them and leaves them out. With ``force``, a service
that fails is logged and recorded in the step's detail (and so in the job's step events), and the
delete goes on to unregister and terminate.
"""

from __future__ import annotations

from pitrix.runtime.fallback import silent_agents
from pitrix.runtime.records import Node
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.destroying import Vetoed, run_destroy
from pitrix.runtime.steps.nodes import members
from pitrix.runtime.steps.services import run_service


async def _unreachable(ctx: JobContext, nodes: list[Node]) -> dict[str, str]:
    """Why each node that cannot run a service cannot (by node id); never-booted nodes included."""
    booted = [n for n in nodes if n.instance_id]
    ids = [n.instance_id for n in booted]
    found = {i.instance_id: i for i in await ctx.provider.describe_instances(instance_ids=ids)} if ids else {}
    why: dict[str, str] = {n.node_id: "it has no instance" for n in nodes if not n.instance_id}
    # asked of metad now: the job's replayed view of the reports may not have caught up yet
    silent = set() if ctx.over_ssh else await silent_agents(ctx.metad, ctx.cid, ids)
    for node in booted:
        instance = found.get(node.instance_id)
        if instance is None:
            why[node.node_id] = f"its instance {node.instance_id} is gone"
        elif instance.status != "running":
            why[node.node_id] = f"its instance {node.instance_id} is {instance.status}"
        elif node.instance_id in silent:
            # channel ssh runs a silent agent's service over SSH instead (run_service's fallback)
            why[node.node_id] = f"the agent of {node.instance_id} is silent"
    return why


async def teardown_service(
    ctx: JobContext, service: str, node_ids: list[str], *, force: bool, strict: bool, veto: bool = False
) -> str:
    """Run ``service`` on the reachable ones of ``node_ids``; see the module's docstring.

    ``veto`` (an AppCenter package's destroy): a failing destroy that does not allow force calls
    the delete off (``destroying.Vetoed``: the cluster back to ``active``) unless ``force``; one
    that allows it is noted and the delete goes on. From a failed or stopped cluster a veto
    fails the delete instead (there is no ``active`` to go back to).
    """
    nodes = [n for n in await members(ctx, node_ids) if service in ctx.cluster.app.role(n.role).services]
    if not nodes:
        return f"no {service} service"
    unreachable = await _unreachable(ctx, nodes)
    skipped = "; ".join(f"{node_id}: {why}" for node_id, why in sorted(unreachable.items()))
    if unreachable and strict and not force:
        raise OperationError(f"{service} cannot run on {skipped} (delete with force to go on without them)")
    if unreachable:
        ctx.log.warning("service left out on unreachable nodes", service=service, skipped=skipped)
    reachable = [n.node_id for n in nodes if n.node_id not in unreachable]
    notes = [f"left out {skipped}"] if unreachable else []
    if reachable and veto:
        try:
            notes.insert(0, await run_destroy(ctx, reachable, force=force))
        except Vetoed as exc:
            if strict:
                raise
            raise OperationError(f"{exc} (delete with force to go on)") from None
    elif reachable:
        try:
            notes.insert(0, await run_service(ctx, service, reachable))
        except OperationError as exc:
            if not force:
                raise
            ctx.log.warning("service failed; going on (force)", service=service, error=str(exc))
            notes.insert(0, f"{exc} (force: going on)")
    return "; ".join(notes)
