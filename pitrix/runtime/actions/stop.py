"""stop: services stop in reverse role order (an lb before its web nodes), then the instances.

An AppCenter package (profile ``appcenter``) stops its roles in ascending ``order``, as AppCenter
does: its packages give ``order`` with that in mind."""

from __future__ import annotations

from pitrix.runtime.actions.base import Action, NoArgs
from pitrix.runtime.actions.phases import service_steps
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.steps import instances, nodes, services
from pitrix.runtime.steps.context import JobContext


class Stop(Action[NoArgs]):
    name = "stop"
    running = "stopping"
    done = "stopped"
    verb = "stop"
    summary = "stop the cluster's services and instances, keeping everything"

    def plan(self, ctx: JobContext, args: NoArgs) -> Plan:
        node_ids = nodes.node_ids(ctx)
        plan = Plan(self.name)
        service_steps(plan, ctx, "stop", node_ids, reverse=not services.appcenter(ctx.cluster))
        plan.then(as_step("stop-instances", instances.stop_instances, ctx, node_ids))
        return plan
