"""start: a stopped cluster's instances boot, their agents come back, services start in role order."""

from __future__ import annotations

from functools import partial

from pitrix.runtime.actions.base import Action, NoArgs
from pitrix.runtime.actions.phases import healthy, service_steps
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.steps import agents, instances, nodes, publishing
from pitrix.runtime.steps.context import JobContext


class Start(Action[NoArgs]):
    name = "start"
    running = "starting"
    sources = ("stopped",)
    verb = "start"
    summary = "start a stopped cluster"

    def plan(self, ctx: JobContext, args: NoArgs) -> Plan:
        """A stopped node's last heartbeat may still be in metad until its lease runs out, so the
        agents prove they are back by applying a fresh revision, not by a heartbeat key."""
        node_ids = nodes.node_ids(ctx)
        plan = Plan(self.name)
        plan.then(as_step("start-instances", instances.start_instances, ctx, node_ids))
        plan.then(as_step("wait-running", instances.wait_running, ctx, node_ids))
        plan.then(as_step("register", publishing.register, ctx, node_ids))
        if ctx.over_ssh:  # the agents died with the instances; their heartbeats linger
            bootstrap = partial(agents.bootstrap_agents, fresh_since=ctx.job.created)
            plan.then(as_step("bootstrap-agents", bootstrap, ctx, node_ids))
        plan.then(as_step("wait-agents", agents.converge, ctx, node_ids))
        service_steps(plan, ctx, "start", node_ids)
        healthy(plan, ctx, node_ids)
        plan.then(as_step("converge", agents.converge, ctx, node_ids))
        return plan
