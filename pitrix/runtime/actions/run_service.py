"""service: run one of the app's custom services (backup, failover ...) on chosen nodes.

Accepted only from ``active``; the cluster is ``running_service`` meanwhile. A custom service
changes nothing pitrix manages, so whatever way it fails, the job is ``failed`` with each node's
outcome while the cluster goes back to ``active`` (``rolled_back``), ready for the next action.

The nodes are chosen when the request is accepted and stored in the job: the named ``nodes``, or
else every node of the named ``roles`` (by default every role offering the service), the first
``nodes_to_execute_on`` of each when the role's service says so. Parameters are checked against
each chosen role's declaration and stored per role, defaults filled in; password values stay
sealed in the job and are opened only by the plan that hands them to the nodes.
"""

from __future__ import annotations

from typing import Any

from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.secret_env import service_param_context
from pitrix.runtime.spec import CustomService, Role
from pitrix.runtime.steps import custom
from pitrix.runtime.steps.context import JobContext

FIELDS = ("name", "params", "roles", "nodes")
# Beyond the service's own timeout, for posting the commands and reading their results: the step
# must not be cut short by the executor before it has recorded every node's outcome.
STEP_MARGIN = 120.0


class ServiceArgs(Args):
    name: str
    params: dict[str, dict[str, str]]  # role -> parameter -> value as text (passwords sealed)
    nodes: list[str]  # node ids, by role and index


class RunService(Action[ServiceArgs]):
    name = "service"
    running = "running_service"
    rolled_back = "active"
    always_rolls_back = True
    verb = "service"
    arguments = ServiceArgs
    summary = "run one of the app's custom services on its roles' nodes (or the named ones)"
    request_schema = {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {
                "type": "string",
                "description": "a custom service of the app (clusters show lists them)",
            },
            "params": {
                "type": "object",
                "description": "parameter: value; checked against the service's parameters",
                "additionalProperties": {"type": ["string", "integer", "number", "boolean"]},
            },
            "roles": {"type": "array", "items": {"type": "string"}, "description": "only these roles"},
            "nodes": {"type": "array", "items": {"type": "string"}, "description": "only these node ids"},
        },
    }

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        unknown = [k for k in body if k not in FIELDS]
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: unknown field (a request has {', '.join(FIELDS)})")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("name: required, the name of one of the app's custom services")
        offering = [r for r in cluster.app.roles if name in r.custom_services]
        if not offering:
            known = sorted({s for r in cluster.app.roles for s in r.custom_services})
            raise InvalidRequest(
                f"name: the app has no custom service {name!r} (has {', '.join(known) or 'none'})"
            )
        roles = _roles(name, offering, cluster, body.get("roles"))
        present = {n.node_id: n for n in await desk.repo.nodes(cluster.id) if n.instance_id}
        chosen = _nodes(name, roles, present, body.get("nodes"))
        params = _params(
            desk, cluster, name, [r for r in roles if any(n.role == r.name for n in chosen)], body
        )
        return Accepted(self, ServiceArgs(name=name, params=params, nodes=[n.node_id for n in chosen]))

    def plan(self, ctx: JobContext, args: ServiceArgs) -> Plan:
        """One step: the service on every chosen node at once, its passwords opened only here."""
        params: dict[str, dict[str, str]] = {}
        secrets: list[str] = []
        for role_name, values in args.params.items():
            declared = ctx.cluster.app.role(role_name).custom_services[args.name].params
            opened = {}
            for key, value in values.items():
                if declared[key].type == "password":
                    value = ctx.sealer.open_text(
                        value, service_param_context(ctx.cid, role_name, args.name, key)
                    )
                    secrets.append(value)
                opened[key] = value
            params[role_name] = opened
        timeout = max(_service(ctx.cluster, n, args.name).timeout for n in args.nodes) + STEP_MARGIN
        plan = Plan(self.name)
        step = as_step(
            f"service:{args.name}",
            custom.run_custom,
            ctx,
            args.name,
            args.nodes,
            params,
            secrets,
            timeout=timeout,
        )
        return plan.then(step)


def _service(cluster: Cluster, node_id: str, name: str) -> CustomService:
    return cluster.app.role(node_id.rsplit("-", 1)[0]).custom_services[name]


def _roles(name: str, offering: list[Role], cluster: Cluster, wanted: Any) -> list[Role]:
    """The roles asked for (each must offer the service), or every role offering it."""
    if wanted is None:
        return offering
    if not isinstance(wanted, list) or not wanted or not all(isinstance(r, str) for r in wanted):
        raise InvalidRequest("roles: must be a non-empty list of role names")
    names = {r.name for r in cluster.app.roles}
    for role in wanted:
        if role not in names:
            raise InvalidRequest(f"roles: the app has no role {role!r} (has {', '.join(sorted(names))})")
        if role not in {r.name for r in offering}:
            raise InvalidRequest(
                f"roles: role {role!r} has no custom service {name!r} "
                f"(offered by {', '.join(r.name for r in offering)})"
            )
    return [r for r in offering if r.name in wanted]


def _nodes(name: str, roles: list[Role], present: dict[str, Node], wanted: Any) -> list[Node]:
    """The nodes named (each of a chosen role), or each chosen role's nodes, the first
    ``nodes_to_execute_on`` of them when its service says so."""
    by_role = {r.name: r for r in roles}
    if wanted is not None:
        if not isinstance(wanted, list) or not wanted or not all(isinstance(n, str) for n in wanted):
            raise InvalidRequest("nodes: must be a non-empty list of node ids (e.g. redis-2)")
        for node_id in wanted:
            if node_id not in present:
                raise InvalidRequest(f"nodes: the cluster has no running node {node_id!r}")
            if present[node_id].role not in by_role:
                raise InvalidRequest(
                    f"nodes: {node_id} is of role {present[node_id].role}, which does not run {name!r} here "
                    f"(roles: {', '.join(by_role)})"
                )
        return sorted((present[n] for n in set(wanted)), key=lambda n: (n.role, n.index))
    chosen: list[Node] = []
    for role in roles:
        limit = role.custom_services[name].nodes_to_execute_on
        of_role = sorted((n for n in present.values() if n.role == role.name), key=lambda n: n.index)
        chosen += of_role[:limit] if limit is not None else of_role
    if not chosen:
        raise InvalidRequest(f"roles: no running node of {', '.join(by_role)} to run {name!r} on")
    return sorted(chosen, key=lambda n: (n.role, n.index))


def _params(
    desk: Desk, cluster: Cluster, name: str, roles: list[Role], body: dict[str, Any]
) -> dict[str, dict[str, str]]:
    """Each role's parameters as text: the given values checked against its declaration, then its
    defaults; a password sealed for this cluster, role, service and key."""
    given = body.get("params", {})
    if not isinstance(given, dict):
        raise InvalidRequest("params: expected an object of parameter: value")
    declared = {key for r in roles for key in r.custom_services[name].params}
    for key in given:
        if key not in declared:
            has = ", ".join(sorted(declared)) or "none"
            raise InvalidRequest(f"params.{key}: {name!r} has no parameter {key!r} (has {has})")
    out: dict[str, dict[str, str]] = {}
    for role in roles:
        values: dict[str, str] = {}
        for key, param in role.custom_services[name].params.items():
            secret = param.type == "password"
            if key in given:
                try:
                    text = param.check(given[key])
                except ValueError as exc:
                    # A password's errors never quote it: they reach logs and other eyes.
                    raise InvalidRequest(
                        f"params.{key}: {'not an allowed value' if secret else exc}"
                    ) from None
            elif param.default is not None:
                text = param.check(param.default)
            elif getattr(param, "required", False):
                raise InvalidRequest(f"params.{key}: required")
            else:
                continue  # not given, no default: the variable is left unset
            where = service_param_context(cluster.id, role.name, name, key)
            values[key] = desk.sealer.seal(text, where) if secret else text
        out[role.name] = values
    return out
