"""Plan fragments several actions share: booting nodes, and running a service role group by group."""

from __future__ import annotations

from functools import partial

from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.steps import agents, instances, publishing, services
from pitrix.runtime.steps.context import JobContext


def role_of(node_id: str) -> str:
    return node_id.rsplit("-", 1)[0]


def service_steps(
    plan: Plan,
    ctx: JobContext,
    service: str,
    node_ids: list[str],
    *,
    reverse: bool = False,
    post_start: bool | None = None,
) -> None:
    """One layer per ``order`` group of roles defining ``service`` (last group first if ``reverse``)."""
    layers = services.service_layers(ctx.cluster, service, post_start)
    suffix = ":post-start" if post_start else ""
    for roles in reversed(layers) if reverse else layers:
        members = [n for n in node_ids if role_of(n) in roles]
        if members:
            name = f"{service}:{'+'.join(roles)}{suffix}"
            plan.then(as_step(name, services.run_service, ctx, service, members))


def init_start(plan: Plan, ctx: JobContext, node_ids: list[str]) -> None:
    """init (roles that init before start), start, the roles' health, then the init of roles marked
    post_start_service: a role with a health check counts as started once its nodes are healthy."""
    service_steps(plan, ctx, "init", node_ids, post_start=False)
    service_steps(plan, ctx, "start", node_ids)
    healthy(plan, ctx, node_ids)
    service_steps(plan, ctx, "init", node_ids, post_start=True)


def healthy(plan: Plan, ctx: JobContext, node_ids: list[str]) -> None:
    """Wait for the nodes of roles with a health check to report healthy (no step without one)."""
    checked = {r.name for r in ctx.cluster.app.roles if r.health_check is not None}
    members = [n for n in node_ids if role_of(n) in checked]
    if members:
        plan.then(as_step("wait-healthy", agents.wait_healthy, ctx, members))


def boot(
    plan: Plan,
    ctx: JobContext,
    node_ids: list[str],
    *,
    adding: bool = False,
    replaces: dict[str, str] | None = None,
) -> None:
    """New instances for the nodes, up to their agents reporting (create, scale out, recover).

    ``adding`` shows them under ``adding-hosts``; ``replaces`` (recover) says whom each replaces."""
    plan.then(as_step("run-instances", instances.run_instances, ctx, node_ids))
    plan.then(as_step("wait-running", instances.wait_running, ctx, node_ids))
    plan.then(
        as_step("register", partial(publishing.register, adding=adding, replaces=replaces), ctx, node_ids)
    )
    if ctx.over_ssh:
        plan.then(as_step("bootstrap-agents", agents.bootstrap_agents, ctx, node_ids))
    plan.then(as_step("wait-agents", agents.wait_agents, ctx, node_ids))
