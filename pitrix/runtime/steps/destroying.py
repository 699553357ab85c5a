"""AppCenter's ``destroy``: run on the nodes about to go, first, and able to call their removal off.

In the appcenter profile a scale-in runs ``destroy`` on the leaving nodes before anything else
moves (the remaining nodes have not yet let them go), and a delete runs it before ``stop``. A
node's failing ``destroy`` whose service says ``allow_force: false`` is a veto: the scale-in or
delete is called off and rolled back (``Vetoed``), nothing removed, the cluster ``active`` again,
the job's error naming each node, its exit status and the app's locale message for it. A delete
asked with ``force`` goes on past a veto; a failing destroy that allows force is noted in the
step's detail and the removal goes on (the package said it may).
"""

from __future__ import annotations

from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.runtime.keys import node_key
from pitrix.runtime.records import Node
from pitrix.runtime.spec import Service
from pitrix.runtime.steps.context import JobContext, RolledBack
from pitrix.runtime.steps.membership import LEAVING, leaving
from pitrix.runtime.steps.nodes import members
from pitrix.runtime.steps.publishing import clear
from pitrix.runtime.steps.services import exit_message, run_commands
from pitrix.store.types import Op


class Vetoed(RolledBack):
    """A ``destroy`` that does not allow force failed: the removal is called off, nothing removed."""


def _failure(ctx: JobContext, node: Node, result: dict[str, Any]) -> str:
    code = result.get("exit_code")
    meaning = exit_message(ctx.cluster.app, code)
    tail = " | ".join(str(result.get("output_tail") or "").strip().splitlines()[-3:])
    return (
        f"{node.node_id} exit {code}" + (f" ({meaning})" if meaning else "") + (f": {tail}" if tail else "")
    )


async def run_destroy(ctx: JobContext, node_ids: list[str], *, force: bool = False) -> str:
    """``destroy`` on the nodes whose role defines it; a failure vetoes unless allowed or forced."""
    targets: list[tuple[Node, Service]] = []
    for node in await members(ctx, node_ids):
        svc = ctx.cluster.app.role(node.role).services.get("destroy")
        if svc is not None and node.instance_id:
            targets.append((node, svc))
    if not targets:
        return "no destroy service"
    results = await run_commands(ctx, "destroy", targets)
    failed = [(n, s) for n, s in targets if results[n.node_id].get("status") != "successful"]
    vetoes = [_failure(ctx, n, results[n.node_id]) for n, s in failed if not s.allow_force]
    if vetoes and not force:
        raise Vetoed(f"destroy refused on {len(vetoes)} node(s), nothing removed: {'; '.join(vetoes)}")
    done = f"destroy on {len(targets)} node(s)"
    if failed:
        said = "; ".join(_failure(ctx, n, results[n.node_id]) for n, _ in failed)
        why = "forced" if vetoes else "allow_force"
        ctx.log.warning("destroy failed; going on", why=why, failures=said)
        done += f"; failed on {said} (going on: {why})"
    return done


async def destroy_leaving(ctx: JobContext) -> str:
    """A scale-in's ``destroy`` on its leavers; on a veto the leavers stay members again (their
    records ``registered``, ``deleting-hosts`` cleared) before the job is rolled back.

    The leavers are marked by the step before this one, so finding none means this step ran
    before, vetoed and released them, and the process stopped before the job's end was written:
    the veto stands.
    """
    chosen = await leaving(ctx)
    if not chosen:
        raise Vetoed("destroy refused earlier in this job; the leaving nodes were kept, nothing removed")
    try:
        return await run_destroy(ctx, chosen)
    except Vetoed:
        await clear(ctx, ks.DELETING_HOSTS)
        kept = [n for n in await members(ctx, chosen) if n.status == LEAVING]
        if kept:
            await ctx.write(
                *(
                    Op(
                        "put",
                        node_key(ctx.cid, n.node_id),
                        n.model_copy(update={"status": "registered"}).dump(),
                    )
                    for n in kept
                )
            )
        raise
