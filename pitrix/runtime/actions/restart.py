"""restart: a rolling restart of roles' nodes, batch by batch, each gated on health.

A node restarts by its role's ``restart`` service (or ``stop`` then ``start`` when the role has
none). A role's nodes go in batches of the service's ``max_in_flight`` (default 1); a batch of a
role with a health check counts as done once each of its nodes passed a check after the restart,
and only then does the next batch start. A failed service or a node that turns unhealthy fails
the job there: later batches are untouched, and ``retry`` resumes at the failed step.
"""

from __future__ import annotations

from typing import Any

from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import SpecError
from pitrix.runtime.steps import restarts
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.wording import did_you_mean


class RestartArgs(Args):
    # Role -> its nodes to restart (each batch takes its share in ``restarts.restart_order``); the
    # roles in the order they go (their restart service's ``order``, then the spec's).
    nodes: dict[str, list[str]]


def _strings(body: dict[str, Any], field: str) -> list[str] | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{field}: must be a non-empty list of strings")
    return list(dict.fromkeys(value))


class Restart(Action[RestartArgs]):
    name = "restart"
    running = "restarting"
    verb = "restart"
    arguments = RestartArgs
    summary = "restart roles' nodes batch by batch (restart service, or stop then start), gated on health"
    request_schema = {
        "type": "object",
        "properties": {
            "roles": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "nodes": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
    }
    body_required = False

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        body = body or {}
        unknown = sorted(set(body) - {"roles", "nodes"})
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: not a field of restart (roles, nodes)")
        roles = _strings(body, "roles")
        wanted = _strings(body, "nodes")
        for i, role in enumerate(roles or []):
            try:
                cluster.app.role(role)
            except SpecError:
                raise InvalidRequest(
                    f"roles.{i}: cluster {cluster.id} has no role {role!r}"
                    + did_you_mean(role, [r.name for r in cluster.app.roles])
                ) from None
            if not restarts.restart_services(cluster, role):
                raise InvalidRequest(f"roles.{i}: role {role} has no restart service (nor stop or start)")
        members = {n.node_id: n for n in await desk.repo.nodes(cluster.id) if n.instance_id}
        for i, node_id in enumerate(wanted or []):
            if node_id not in members:
                raise InvalidRequest(f"nodes.{i}: cluster {cluster.id} has no running node {node_id!r}")
            role = members[node_id].role
            if roles is not None and role not in roles:
                raise InvalidRequest(f"nodes.{i}: {node_id} is not of the roles given ({', '.join(roles)})")
            if not restarts.restart_services(cluster, role):
                raise InvalidRequest(f"nodes.{i}: role {role} has no restart service (nor stop or start)")
        chosen = [
            n
            for n in members.values()
            if (wanted is None or n.node_id in wanted)
            and (roles is None or n.role in roles)
            and restarts.restart_services(cluster, n.role)
        ]
        if not chosen:
            raise InvalidRequest("roles: no node of the cluster has a restart service (nor stop or start)")
        by_role: dict[str, list[str]] = {}
        names = [role.name for role in cluster.app.roles]
        for role in sorted(names, key=lambda r: (_order(cluster, r), names.index(r))):
            ids = [n.node_id for n in chosen if n.role == role]
            if ids:
                by_role[role] = ids
        return Accepted(self, RestartArgs(nodes=by_role))

    def plan(self, ctx: JobContext, args: RestartArgs) -> Plan:
        plan = Plan(self.name)
        for role, node_ids in args.nodes.items():
            size = restarts.batch_size(ctx.cluster, role)
            defined = ctx.cluster.app.role(role).services
            service_time = sum(defined[s].timeout for s in restarts.restart_services(ctx.cluster, role)) + 60
            # A batch's nodes are chosen when it runs (``restarts.batch``), in restart order.
            for number in range(1, -(-len(node_ids) // size) + 1):
                name = f"{role}:batch-{number}"
                batch = (ctx, role, node_ids, number, size)
                plan.then(as_step(f"restart:{name}", restarts.restart_batch, *batch, timeout=service_time))
                if ctx.cluster.app.role(role).health_check is not None:
                    gate = _gate_timeout(ctx, role)
                    plan.then(as_step(f"healthy:{name}", restarts.healthy_again, *batch, timeout=gate))
        return plan


def _order(cluster: Cluster, role: str) -> int:
    defined = cluster.app.role(role).services
    service = defined.get("restart") or defined.get("start")
    return service.order if service else 0


def _gate_timeout(ctx: JobContext, role: str) -> float:
    check = ctx.cluster.app.role(role).health_check
    assert check is not None
    return max(120.0, 3 * (check.interval + check.timeout)) + 30
