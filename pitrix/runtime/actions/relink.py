"""relink: add, change and remove a cluster's links after create (``POST /v1/clusters/<id>/links``).

The body is ``{"links": {name: cluster id, or null to remove}}``; links not named keep their
targets. The app's declared links (``AppSpec.links``) bound what may change: a link declared
``changeable: false`` is set at create only, a ``required`` one cannot be removed, one naming an
``app`` must point at a cluster of that app; a target is a cluster of the same owner and runtime,
not being deleted, as at create. The plan writes the new links to metad (``/clusters/<cid>/links``),
where every node of the cluster sees them at ``/self/links/<name>/...`` and re-renders, then waits
until each node has applied the change. A write that fails puts the previous links back and the
cluster returns to ``active`` with its old links (``rolled_back``).
"""

from __future__ import annotations

from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.actions.create import LINK_NAME, check_declared_links, check_links
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster
from pitrix.runtime.steps import agents, nodes
from pitrix.runtime.steps.context import JobContext, RolledBack


class RelinkArgs(Args):
    links: dict[str, str]  # the cluster's links once the job is done
    # its links before: what a failed write puts back (not "previous": env jobs' name, opened as env)
    before: dict[str, str]


class Relink(Action[RelinkArgs]):
    name = "relink"
    running = "relinking"
    rolled_back = "active"
    verb = "links"
    arguments = RelinkArgs
    summary = "add, change or remove the cluster's links (name -> cluster id, or null to remove)"
    request_schema = {
        "type": "object",
        "required": ["links"],
        "properties": {
            "links": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {"type": "string", "nullable": True},
            }
        },
    }

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        unknown = sorted(set(body) - {"links"})
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: not a field of links (links)")
        changes = body.get("links")
        if not isinstance(changes, dict) or not changes:
            raise InvalidRequest("links: must be an object of link name -> cluster id (or null to remove)")
        current = dict(cluster.links)
        given: dict[str, str] = {}
        for name, target in changes.items():
            if not LINK_NAME.fullmatch(name):
                raise InvalidRequest(f"links.{name}: a link name is lower case letters, digits, - and _")
            if target is not None and not isinstance(target, str):
                raise InvalidRequest(f"links.{name}: must be a cluster id, or null to remove the link")
            if target is None and name not in current:
                raise InvalidRequest(f"links.{name}: cluster {cluster.id} has no link {name!r}")
            if target == cluster.id:
                raise InvalidRequest(f"links.{name}: a cluster cannot link to itself")
            declared = cluster.app.links.get(name)
            if declared is not None and not declared.changeable and current.get(name) != target:
                raise InvalidRequest(f"links.{name}: is not changeable (the app sets it at create only)")
            if target is not None:
                given[name] = target
        _, targets = await check_links(desk, cluster.owner, cluster.runtime, given)
        check_declared_links(cluster.app, changes, targets, complete=False)
        links = {k: v for k, v in {**current, **changes}.items() if v is not None}
        if links == current:
            raise InvalidRequest("links: the cluster has these links already")
        return Accepted(self, RelinkArgs(links=links, before=current))

    def plan(self, ctx: JobContext, args: RelinkArgs) -> Plan:
        plan = Plan(self.name)
        plan.then(as_step("relink", write_links, ctx, args.links, args.before))
        plan.then(as_step("converge", agents.converge, ctx, nodes.node_ids(ctx)))
        return plan

    def commit(self, cluster: Cluster, args: RelinkArgs) -> dict[str, Any]:
        return {"links": dict(args.links)}


async def _publish(ctx: JobContext, links: dict[str, str], before: dict[str, str]) -> int:
    revision = 0
    for name in sorted(set(before) - set(links)):
        revision = await ctx.metad.delete_data(f"{ks.links(ctx.cid)}/{name}")
    if links:
        revision = await ctx.metad.put_data(ks.links(ctx.cid), links)
    return revision


async def write_links(ctx: JobContext, links: dict[str, str], previous: dict[str, str]) -> str:
    """``/clusters/<cid>/links`` becomes ``links`` (removed names deleted); metad shows each to the
    nodes while the target has the same owner. Idempotent: run again, it writes the same."""
    try:
        revision = await _publish(ctx, links, previous)
    except Exception as exc:
        try:
            await _publish(ctx, previous, links)
        except Exception as again:
            raise RolledBack(
                f"links not written ({exc}); putting the previous ones back failed too: {again}"
            ) from exc
        raise RolledBack(f"links not written ({exc}); the previous links are back") from exc
    shown = ", ".join(f"{k}={v}" for k, v in sorted(links.items())) or "none"
    return f"links {shown} at revision {revision}"
