"""scale_out and scale_in: one role's node count moves; ``POST .../scale`` picks the direction.

Scaling out boots the added nodes like a create, then tells the existing ones (``scale_out``
service) while metad shows the newcomers under ``adding-hosts``. Scaling in marks the leaving
nodes (``deleting-hosts``), lets the remaining ones let go (``scale_in``), then stops, destroys
and terminates the leaving ones. The role's new count is committed only when the job succeeds.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from pitrix.metad import keyspace as ks
from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.actions.create import MAX_COUNT, count_error
from pitrix.runtime.actions.phases import boot, delete_volumes, init_start
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import SpecError
from pitrix.runtime.steps import agents, instances, nodes, publishing, services
from pitrix.runtime.steps.context import JobContext


class ScaleArgs(Args):
    role: str
    old: int = Field(alias="from", ge=0)
    new: int = Field(alias="to", ge=0)


class _Scale(Action[ScaleArgs]):
    verb: ClassVar[str | None] = "scale"
    arguments = ScaleArgs
    summary = "set a role's node count (scale out or in)"
    request_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "required": ["role", "count"],
        "properties": {
            "role": {"type": "string"},
            "count": {"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
        },
    }

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        role, count = body.get("role"), body.get("count")
        if not isinstance(role, str):
            raise InvalidRequest("role: required, a role name")
        try:
            cluster.app.role(role)
        except SpecError:
            raise InvalidRequest(f"role: cluster {cluster.id} has no role {role!r}") from None
        if not isinstance(count, int) or isinstance(count, bool):
            raise InvalidRequest("count: required, a whole number")
        if (error := count_error(count)) is not None:
            raise InvalidRequest(f"count: {error}")
        current = cluster.counts.get(role, 0)
        if count == current:
            raise InvalidRequest(f"count: role {role} already has {count} nodes")
        action = SCALE_OUT if count > current else SCALE_IN
        return Accepted(action, ScaleArgs(role=role, old=current, new=count))

    def commit(self, cluster: Cluster, args: ScaleArgs) -> dict[str, Any]:
        return {"counts": dict(cluster.counts, **{args.role: args.new})}


class ScaleOut(_Scale):
    name = "scale_out"
    running = "scaling_out"

    def plan(self, ctx: JobContext, args: ScaleArgs) -> Plan:
        added = [f"{args.role}-{i}" for i in range(args.old + 1, args.new + 1)]
        counts = dict(ctx.cluster.counts, **{args.role: args.new})
        existing = [n for n in nodes.all_node_ids(ctx.cluster, counts) if n not in added]
        plan = Plan(self.name)
        plan.then(as_step("plan-nodes", nodes.plan_nodes, ctx, counts))
        boot(plan, ctx, added, adding=True)
        init_start(plan, ctx, added)
        plan.then(as_step("scale_out", services.run_service, ctx, "scale_out", existing))
        plan.then(as_step("converge", agents.converge, ctx, existing + added))
        plan.then(as_step("clear-adding-hosts", publishing.clear, ctx, ks.ADDING_HOSTS))
        return plan


class ScaleIn(_Scale):
    name = "scale_in"
    running = "scaling_in"
    verb = None  # asked for as "scale", chosen by the count

    def plan(self, ctx: JobContext, args: ScaleArgs) -> Plan:
        leaving = [f"{args.role}-{i}" for i in range(args.new + 1, args.old + 1)]
        counts = dict(ctx.cluster.counts, **{args.role: args.old})
        remaining = [n for n in nodes.all_node_ids(ctx.cluster, counts) if n not in leaving]
        plan = Plan(self.name)
        plan.then(as_step("mark-leaving", publishing.mark_leaving, ctx, leaving))
        plan.then(as_step("scale_in", services.run_service, ctx, "scale_in", remaining))
        plan.then(as_step("stop-leaving", services.run_service, ctx, "stop", leaving))
        plan.then(as_step("destroy-leaving", services.run_service, ctx, "destroy", leaving))
        plan.then(as_step("unregister", publishing.unregister, ctx, leaving))
        plan.then(as_step("terminate", instances.terminate, ctx, leaving))
        delete_volumes(plan, ctx, leaving)
        plan.then(as_step("converge", agents.converge, ctx, remaining))
        plan.then(as_step("clear-deleting-hosts", publishing.clear, ctx, ks.DELETING_HOSTS))
        return plan


SCALE_OUT, SCALE_IN = ScaleOut(), ScaleIn()
