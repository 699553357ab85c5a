"""Membership: which nodes leave, who may refuse, and what the live members are told.

Scale-in chooses its leavers while it runs (the role's ``ordering`` runs on a node), so the choice
is written to the node records (status ``leaving``, in one transaction) before anything acts on
it, and every later step of the plan reads it back from there: a resumed job goes on with the
leavers it chose, never chooses again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.runtime.keys import node_key
from pitrix.runtime.spec import Service
from pitrix.runtime.steps.context import JobContext, OperationError, RolledBack
from pitrix.runtime.steps.nodes import members, nodes, split_id
from pitrix.runtime.steps.ordering import ordered
from pitrix.runtime.steps.publishing import host_tree
from pitrix.runtime.steps.services import command_line, exit_message, first_live, run_commands
from pitrix.store.types import Op

LEAVING = "leaving"


class Refused(RolledBack):
    """A ``pre_check`` said no: the job fails, the cluster is left as it was (``active``)."""


async def pre_check(ctx: JobContext, service: str, env: dict[str, str]) -> str:
    """Each role whose ``service`` has a ``pre_check`` runs it on one live node of its own.

    The command sees what is asked in ``env`` (``PITRIX_SCALE_*``, exported before it runs). A
    non-zero exit refuses the job with the command's output, before anything has changed.
    """
    asked: list[str] = []
    every = [n for n in await nodes(ctx) if n.status != LEAVING]
    for role in ctx.cluster.app.roles:
        svc = role.services.get(service)  # type: ignore[call-overload]
        if svc is None or not svc.pre_check:
            continue
        runner = await first_live(ctx, [n for n in every if n.role == role.name])
        if runner is None:
            asked.append(f"{role.name} (no live node, not asked)")
            continue
        check = Service(cmd=command_line(svc.pre_check, env), timeout=svc.timeout)
        result = (await run_commands(ctx, f"pre_check-{service}", [(runner, check)]))[runner.node_id]
        if result.get("status") != "successful":
            output = str(result.get("output_tail") or "").strip() or "(no output)"
            meaning = exit_message(ctx.cluster.app, result.get("exit_code"))
            raise Refused(
                f"{service} pre_check of role {role.name} refused on {runner.node_id} "
                f"(exit {result.get('exit_code')}{': ' + meaning if meaning else ''}): {output}"
            )
        asked.append(f"{role.name} on {runner.node_id}: ok")
    return "; ".join(asked) or "no pre_check"


async def leaving(ctx: JobContext) -> list[str]:
    """The nodes a scale-in chose (status ``leaving``), as the node records say now."""
    return [n.node_id for n in await nodes(ctx) if n.status == LEAVING]


async def remaining(ctx: JobContext) -> list[str]:
    """The nodes that stay: every node not leaving."""
    return [n.node_id for n in await nodes(ctx) if n.status != LEAVING]


StepFn = Callable[..., Awaitable[str]]


async def on_leaving(ctx: JobContext, fn: StepFn, *args: Any) -> str:
    """``fn(ctx, *args, <the leaving node ids>)``: a step over the leavers chosen at run time."""
    return await fn(ctx, *args, await leaving(ctx))


async def on_remaining(ctx: JobContext, fn: StepFn, *args: Any) -> str:
    """``fn(ctx, *args, <the remaining node ids>)``."""
    return await fn(ctx, *args, await remaining(ctx))


async def choose_leavers(ctx: JobContext, role: str, count: int, named: list[str]) -> list[str]:
    """Who leaves: the ``named`` nodes, else the first ``count`` of the role's ``ordering``, else
    the ``count`` highest indexes."""
    if named:
        return list(named)
    role_ids = [n.node_id for n in await nodes(ctx, role)]
    if count > len(role_ids):
        raise OperationError(f"role {role} has {len(role_ids)} nodes; {count} cannot leave")
    if ctx.cluster.app.role(role).ordering:
        return (await ordered(ctx, role, role_ids))[:count]
    by_index = sorted(role_ids, key=lambda n: split_id(n)[1])
    return by_index[len(by_index) - count :]


async def mark_leaving(ctx: JobContext, role: str, count: int, named: list[str]) -> str:
    """Choose the leavers (once), mark them ``leaving`` in one write, and show them to the live
    members under ``deleting-hosts``."""
    chosen = await leaving(ctx)
    if not chosen:
        chosen = await choose_leavers(ctx, role, count, named)
        found = await members(ctx, chosen)
        missing = sorted(set(chosen) - {n.node_id for n in found})
        if missing:
            raise OperationError(f"nodes {', '.join(missing)} do not exist")
        await ctx.write(
            *(
                Op("put", node_key(ctx.cid, n.node_id), n.model_copy(update={"status": LEAVING}).dump())
                for n in found
            )
        )
    deleting = host_tree(ctx, await members(ctx, chosen))
    if deleting:
        await ctx.metad.put_data(ks.cluster(ctx.cid), {ks.DELETING_HOSTS: deleting})
    return f"leaving: {', '.join(chosen)}"


async def mark_replaced(ctx: JobContext, old: dict[str, str]) -> str:
    """recover: the instances being replaced (``{node_id: instance_id}``) appear under
    ``deleting-hosts`` as they were, so the live members' ``scale_in`` can let them go."""
    # Only those not yet forgotten (a re-run after forget-old is done finds the new instance).
    still = [n for n in await members(ctx, list(old)) if n.instance_id == old[n.node_id]]
    deleting = host_tree(ctx, still)
    if deleting:
        await ctx.metad.put_data(ks.cluster(ctx.cid), {ks.DELETING_HOSTS: deleting})
    return f"replacing {', '.join(f'{n} ({i})' for n, i in sorted(old.items()))}"
