"""resize: vertical scaling of roles' nodes (CPU, memory, instance type, volume size), rolling.

``POST /v1/clusters/<id>/resize`` with ``{"roles": {ROLE: {"cpu", "memory", "instance_type",
"volume_size"}}}`` (any of the four per role). The request is judged against the role's
``vertical_scaling`` bounds before anything stops: an unknown role or field, a value out of bounds,
a volume that would shrink, a volume size for a role without a volume and a role whose size would
not change are refused, each naming the field.

A role's nodes go in batches of its ``vertical_scaling.max_in_flight``, in the role's ``ordering``
(leader last) when it has one; each batch (``steps.resizing``) is gated on health like a rolling
restart's, and once every node of a role has its new size the cluster record takes it
(``Cluster.resources``), so nodes made later (scale-out, recover) are made that size.

A failure fails the job naming the node and leaves the cluster ``active`` (``always_rolls_back``):
nodes already resized keep their new size (a resize is never undone), roles finished before are
recorded, the role that failed is not (its nodes may differ in size until a resize of it succeeds;
nodes already at the size are skipped by the cloud calls).
"""

from __future__ import annotations

from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster, RoleResources
from pitrix.runtime.resources import role_size
from pitrix.runtime.spec import SpecError
from pitrix.runtime.steps import operation_keys, resizing, restarts
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.steps.resizing import Target
from pitrix.runtime.wording import did_you_mean

FIELDS = ("cpu", "memory", "instance_type", "volume_size")
# Beyond the services' own timeouts: an instance's stop, resize, boot, its agent and the growth.
BATCH_SLACK = 900


class ResizeArgs(Args):
    targets: dict[str, Target]  # role -> its size after the resize (every field given)
    nodes: dict[str, list[str]]  # role -> its nodes, roles in the spec's order


def _positive(role: str, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"roles.{role}.{field}: must be a positive integer")
    return value


def _within(role: str, field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidRequest(f"roles.{role}.{field}: {value} is outside the role's bounds [{low}, {high}]")


def judge(cluster: Cluster, role: str, asked: Any) -> Target:
    """The role's size after the request, or the refusal naming the field."""
    try:
        spec = cluster.app.role(role)
    except SpecError:
        raise InvalidRequest(
            f"roles.{role}: cluster {cluster.id} has no role {role!r}"
            + did_you_mean(role, [r.name for r in cluster.app.roles])
        ) from None
    if not isinstance(asked, dict) or not asked:
        raise InvalidRequest(f"roles.{role}: must be an object with any of {', '.join(FIELDS)}")
    unknown = sorted(set(asked) - set(FIELDS))
    if unknown:
        raise InvalidRequest(f"roles.{role}.{unknown[0]}: not a field of resize ({', '.join(FIELDS)})")
    bounds = spec.vertical_scaling
    now = role_size(cluster, role)
    cpu, memory, kind = now.cpu, now.memory, now.instance_type
    if "cpu" in asked or "memory" in asked:
        kind = ""  # sized by cpu and memory from now on, unless a type is given too
    if "cpu" in asked:
        cpu = _positive(role, "cpu", asked["cpu"])
        _within(role, "cpu", cpu, bounds.min_cpu, bounds.max_cpu)
    if "memory" in asked:
        memory = _positive(role, "memory", asked["memory"])
        _within(role, "memory", memory, bounds.min_memory, bounds.max_memory)
    if "instance_type" in asked:
        kind = asked["instance_type"]
        if not isinstance(kind, str) or not kind or len(kind) > 64:
            raise InvalidRequest(f"roles.{role}.instance_type: must be a non-empty string (up to 64)")
        if bounds.instance_types and kind not in bounds.instance_types:
            raise InvalidRequest(
                f"roles.{role}.instance_type: {kind!r} is not one of {', '.join(bounds.instance_types)}"
            )
    volume_size = now.volume_size
    if "volume_size" in asked:
        if now.volume_size is None:
            raise InvalidRequest(f"roles.{role}.volume_size: role {role} has no volume")
        volume_size = _positive(role, "volume_size", asked["volume_size"])
        if volume_size < now.volume_size:
            raise InvalidRequest(
                f"roles.{role}.volume_size: {volume_size} GiB would shrink the volume "
                f"({now.volume_size} GiB); volumes only grow"
            )
        _within(role, "volume_size", volume_size, now.volume_size, bounds.max_volume_size)
    changes = (cpu, memory, kind) != (now.cpu, now.memory, now.instance_type)
    grows = volume_size is not None and now.volume_size is not None and volume_size > now.volume_size
    if not changes and not grows:
        raise InvalidRequest(f"roles.{role}: its nodes already have that size; nothing changes")
    return Target(
        cpu=cpu,
        memory=memory,
        instance_type=kind,
        volume_size=volume_size,
        instance_changes=changes,
        volume_grows=grows,
    )


class Resize(Action[ResizeArgs]):
    name = "resize"
    running = "resizing"
    verb = "resize"
    arguments = ResizeArgs
    # A failure leaves the cluster active (nodes done keep their size; see the module's doc).
    rolled_back = "active"
    always_rolls_back = True
    summary = "resize roles' nodes (cpu, memory, instance type, volume size) batch by batch, gated on health"
    request_schema = {
        "type": "object",
        "required": ["roles"],
        "properties": {
            "roles": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {
                    "type": "object",
                    "minProperties": 1,
                    "properties": {
                        "cpu": {"type": "integer", "minimum": 1},
                        "memory": {"type": "integer", "minimum": 128, "description": "MiB"},
                        "instance_type": {"type": "string", "minLength": 1},
                        "volume_size": {"type": "integer", "minimum": 1, "description": "GiB, grow only"},
                    },
                    "additionalProperties": False,
                },
            }
        },
    }

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        if not isinstance(body, dict):
            raise InvalidRequest("body: must be an object with roles")
        unknown = sorted(set(body) - {"roles"})
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: not a field of resize (roles)")
        asked = body.get("roles")
        if not isinstance(asked, dict) or not asked:
            raise InvalidRequest("roles: must be an object naming at least one role")
        targets = {role: judge(cluster, role, asked[role]) for role in asked}
        members = [n for n in await desk.repo.nodes(cluster.id) if n.instance_id]
        order = [r.name for r in cluster.app.roles if r.name in targets]
        nodes = {role: sorted(n.node_id for n in members if n.role == role) for role in order}
        return Accepted(self, ResizeArgs(targets={r: targets[r] for r in order}, nodes=nodes))

    def plan(self, ctx: JobContext, args: ResizeArgs) -> Plan:
        plan = Plan(self.name)
        audit = operation_keys.wanted(ctx.cluster.app)
        if audit:  # AppCenter's packages read it while the resized nodes stop and start
            roles = list(args.targets)
            plan.then(as_step("vertical-scaling-roles", operation_keys.mark_vertical_scaling, ctx, roles))
        for role, target in args.targets.items():
            node_ids = args.nodes.get(role, [])
            size = ctx.cluster.app.role(role).vertical_scaling.max_in_flight
            defined = ctx.cluster.app.role(role).services
            timeout = sum(defined[s].timeout for s in ("stop", "start") if s in defined) + BATCH_SLACK
            for number in range(1, -(-len(node_ids) // size) + 1):
                name = f"{role}:batch-{number}"
                batch = (ctx, role, node_ids, number, size)
                plan.then(as_step(f"resize:{name}", resizing.resize_batch, *batch, target, timeout=timeout))
                if ctx.cluster.app.role(role).health_check is not None:
                    gate = _gate_timeout(ctx, role)
                    plan.then(as_step(f"healthy:{name}", restarts.healthy_again, *batch, timeout=gate))
            plan.then(as_step(f"record:{role}", resizing.record_size, ctx, role, target))
        if audit:
            section = ks.VERTICAL_SCALING_ROLES
            plan.then(as_step("clear-vertical-scaling-roles", operation_keys.unmark, ctx, section))
        return plan

    def commit(self, cluster: Cluster, args: ResizeArgs) -> dict[str, Any]:
        resources = dict(cluster.resources)
        for role, t in args.targets.items():
            resources[role] = RoleResources(
                cpu=t.cpu, memory=t.memory, instance_type=t.instance_type, volume_size=t.volume_size
            )
        return {"resources": resources}


def _gate_timeout(ctx: JobContext, role: str) -> float:
    check = ctx.cluster.app.role(role).health_check
    assert check is not None
    return max(120.0, 3 * (check.interval + check.timeout)) + 30
