"""A role's own order of its nodes: the role's ``ordering`` command, run on one of its nodes.

The app knows what pitrixd cannot: which node leads. ``ordering`` prints the role's node ids, one
per line, leader last; scale-in removes the first ones, and a rolling restart goes in that order,
so leadership moves once, at the end, instead of at every step.
"""

from __future__ import annotations

import re

from pitrix.runtime.spec import Service
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.nodes import members
from pitrix.runtime.steps.published import stdout_of
from pitrix.runtime.steps.services import first_live, run_commands

ORDERING_TIMEOUT = 60


def _ids(printed: str) -> list[str]:
    """The words of an ordering's output: one id per line, or AppCenter's ``get_nodes_order``
    form, ids separated by commas."""
    return [word for word in re.split(r"[\s,]+", printed) if word]


def apply_order(node_ids: list[str], printed: str) -> list[str]:
    """``node_ids`` in the order ``printed`` lists them; ids it leaves out go first, as given.

    Ids may also be separated by commas (AppCenter's ``get_nodes_order``). An id it leaves out is
    one the app does not know of (a node still joining, or one it lost):
    the least worth keeping, so the first to go. Lines naming no node of ``node_ids`` (blank
    ones, other roles' nodes) are ignored.
    """
    wanted = set(node_ids)
    listed: list[str] = []
    for node_id in _ids(printed):
        if node_id in wanted and node_id not in listed:
            listed.append(node_id)
    return [n for n in node_ids if n not in listed] + listed


async def ordered(ctx: JobContext, role: str, node_ids: list[str]) -> list[str]:
    """``node_ids`` (of ``role``) in the role's ``ordering``: leader last, first listed go first.

    Without an ``ordering`` the ids come back as given. The command runs on the first node of the
    role whose agent reports (any one if none does: over SSH on channel ssh); a failure, or an
    output naming none of the nodes, fails the step rather than guess. Its command id is the
    job's (``<job>-ordering-<role>-<node>``): asked again within one job (a resumed step), the
    answer is the one already given, so a job never acts on two different orders.
    """
    command = ctx.cluster.app.role(role).ordering
    if not command or not node_ids:
        return list(node_ids)
    candidates = await members(ctx, node_ids)
    if not candidates:
        raise OperationError(f"{role} ordering: none of {', '.join(node_ids)} exists")
    placed = [n for n in candidates if n.instance_id] or candidates
    runner = await first_live(ctx, candidates) or placed[0]
    service = Service(cmd=command, timeout=ORDERING_TIMEOUT)
    result = (await run_commands(ctx, f"ordering-{role}", [(runner, service)]))[runner.node_id]
    output = stdout_of(result)
    if result.get("status") != "successful":
        tail = " | ".join(str(result.get("output_tail") or "").strip().splitlines()[-3:])
        raise OperationError(
            f"{role} ordering failed on {runner.node_id} (exit {result.get('exit_code')}): {tail}"
        )
    order = apply_order(list(node_ids), output)
    if not set(_ids(output)) & set(node_ids):
        raise OperationError(
            f"{role} ordering on {runner.node_id} printed none of {', '.join(node_ids)}: "
            f"{output.strip()[:200]!r} (it prints node ids, one per line, leader last)"
        )
    return order
