"""scale_out and scale_in: one role's node count moves; ``POST .../scale`` picks the direction.

Scaling out boots the added nodes (at the lowest free indexes) like a create; metad shows them
under ``adding-hosts``; the live members run ``pre_scale_out`` before the newcomers start (an
etcd ``member add``, its answer published for them) and ``scale_out`` after. Scaling in removes
the nodes named, else the first ones of the role's ``ordering``, else the highest indexes: they
are marked (``deleting-hosts``), the remaining ones let go (``scale_in``), then they are stopped,
destroyed and terminated. A ``pre_check`` may refuse either before anything changes. The role's
new count is committed only when the job succeeds. An AppCenter package (profile ``appcenter``)
runs ``destroy`` on the leavers first, where a failing one that does not allow force calls the
scale-in off (steps/destroying.py); a role's ``count_range`` and ``scale_horizontal`` bound both.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from pitrix.metad import keyspace as ks
from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.actions.create import MAX_COUNT, count_error
from pitrix.runtime.actions.phases import boot, delete_left_volumes, init_start
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster
from pitrix.runtime.spec import SpecError
from pitrix.runtime.steps import agents, destroying, instances, membership, nodes, publishing, services
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.wording import did_you_mean


class ScaleArgs(Args):
    role: str
    old: int = Field(alias="from", ge=0)
    new: int = Field(alias="to", ge=0)
    # scale_out: the added node ids (free indexes, chosen at accept); scale_in: the leavers the
    # request named (empty: chosen while the job runs, by the role's ordering or highest index).
    nodes: list[str] = Field(default_factory=list)


def _scale_env(args: ScaleArgs) -> dict[str, str]:
    """What a pre_check is told about the request."""
    return {
        "PITRIX_SCALE_ROLE": args.role,
        "PITRIX_SCALE_FROM": str(args.old),
        "PITRIX_SCALE_TO": str(args.new),
        "PITRIX_SCALE_NODES": " ".join(args.nodes),
    }


def _pre_check(plan: Plan, ctx: JobContext, service: str, args: ScaleArgs) -> None:
    """The first step, when any role's ``service`` has a ``pre_check``: it may refuse the job."""
    checks = [r.services.get(service) for r in ctx.cluster.app.roles]  # type: ignore[call-overload]
    if any(svc is not None and svc.pre_check for svc in checks):
        plan.then(as_step("pre-check", membership.pre_check, ctx, service, _scale_env(args)))


class _Scale(Action[ScaleArgs]):
    verb: ClassVar[str | None] = "scale"
    arguments = ScaleArgs
    rolled_back = "active"  # a pre_check refused: nothing changed
    summary = "set a role's node count (scale out or in), or scale in chosen nodes"
    request_schema: ClassVar[dict[str, Any] | None] = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string"},
            "count": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_COUNT,
                "description": "the role's new node count (required unless nodes is given)",
            },
            "nodes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "scale in: the node ids that leave (count, if given, must match)",
            },
        },
    }

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        role, count, named = body.get("role"), body.get("count"), body.get("nodes")
        if not isinstance(role, str):
            raise InvalidRequest("role: required, a role name")
        try:
            spec_role = cluster.app.role(role)
        except SpecError:
            raise InvalidRequest(
                f"role: cluster {cluster.id} has no role {role!r}"
                + did_you_mean(role, [r.name for r in cluster.app.roles])
            ) from None
        if not spec_role.scale_horizontal:
            raise InvalidRequest(f"roles.{role}: scale_horizontal is false (its node count is fixed)")
        current = cluster.counts.get(role, 0)
        ids = [n.node_id for n in await desk.repo.nodes(cluster.id) if n.role == role]
        if named is not None:
            if not isinstance(named, list) or not all(isinstance(n, str) for n in named) or not named:
                raise InvalidRequest(f"nodes: a non-empty list of the node ids that leave (e.g. {role}-2)")
            twice = sorted({n for n in named if named.count(n) > 1})
            if twice:
                raise InvalidRequest(f"nodes: names {twice[0]} twice")
            unknown = [n for n in named if n not in ids]
            if unknown:
                raise InvalidRequest(
                    f"nodes: role {role} has no node {', '.join(map(repr, unknown))} "
                    f"(has {', '.join(ids) or 'none'})"
                )
            if count is None:
                count = current - len(named)
        if not isinstance(count, int) or isinstance(count, bool):
            raise InvalidRequest("count: required (unless nodes is given), a whole number")
        if (error := count_error(count)) is not None:
            raise InvalidRequest(f"count: {error}")
        if spec_role.count_range is not None and count not in spec_role.count_range:
            allowed = ", ".join(str(n) for n in spec_role.count_range)
            raise InvalidRequest(f"roles.{role}.count: {count} is not one of {allowed}")
        if named:
            if current - len(named) != count:
                raise InvalidRequest(
                    f"nodes: {len(named)} of {current} leaving leaves {current - len(named)}, "
                    f"not count {count}"
                )
            return Accepted(SCALE_IN, ScaleArgs(role=role, old=current, new=count, nodes=list(named)))
        if count == current:
            raise InvalidRequest(f"count: role {role} already has {count} nodes")
        if count > current:
            added = nodes.free_ids(role, ids, count - current)
            return Accepted(SCALE_OUT, ScaleArgs(role=role, old=current, new=count, nodes=added))
        return Accepted(SCALE_IN, ScaleArgs(role=role, old=current, new=count))

    def commit(self, cluster: Cluster, args: ScaleArgs) -> dict[str, Any]:
        return {"counts": dict(cluster.counts, **{args.role: args.new})}


class ScaleOut(_Scale):
    name = "scale_out"
    running = "scaling_out"

    def plan(self, ctx: JobContext, args: ScaleArgs) -> Plan:
        """pre-check, boot the added nodes (under adding-hosts), pre_scale_out on the live members,
        init/start the added ones, scale_out on the live members, converge, clear adding-hosts."""
        # Jobs accepted before targeting stored no ids: theirs were the next contiguous indexes.
        added = args.nodes or [f"{args.role}-{i}" for i in range(args.old + 1, args.new + 1)]
        existing = [n for n in nodes.node_ids(ctx) if n not in added]
        plan = Plan(self.name)
        _pre_check(plan, ctx, "scale_out", args)
        plan.then(as_step("plan-nodes", nodes.plan_node_ids, ctx, added))
        boot(plan, ctx, added, adding=True)
        if services.service_layers(ctx.cluster, "pre_scale_out"):
            plan.then(as_step("pre_scale_out", services.run_service, ctx, "pre_scale_out", existing))
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
        """pre-check, choose and mark the leavers (deleting-hosts), scale_in on the remaining,
        stop and destroy on the leaving, unregister, terminate, converge, clear deleting-hosts.

        The leavers are chosen by the ``mark-leaving`` step (named, else the role's ordering,
        else the highest indexes) and read back from the node records by every later step.
        """
        run, leaving, remaining = services.run_service, membership.on_leaving, membership.on_remaining
        plan = Plan(self.name)
        _pre_check(plan, ctx, "scale_in", args)
        count = args.old - args.new
        plan.then(as_step("mark-leaving", membership.mark_leaving, ctx, args.role, count, list(args.nodes)))
        if services.appcenter(ctx.cluster):  # AppCenter's: destroy first, where it may still veto
            plan.then(as_step("destroy-leaving", destroying.destroy_leaving, ctx))
            plan.then(as_step("scale_in", remaining, ctx, run, "scale_in"))
            plan.then(as_step("stop-leaving", leaving, ctx, run, "stop"))
        else:
            plan.then(as_step("scale_in", remaining, ctx, run, "scale_in"))
            plan.then(as_step("stop-leaving", leaving, ctx, run, "stop"))
            plan.then(as_step("destroy-leaving", leaving, ctx, run, "destroy"))
        plan.then(as_step("unregister", leaving, ctx, publishing.unregister))
        plan.then(as_step("terminate", leaving, ctx, instances.terminate))
        delete_left_volumes(plan, ctx)
        plan.then(as_step("converge", remaining, ctx, agents.converge))
        plan.then(as_step("clear-deleting-hosts", publishing.clear, ctx, ks.DELETING_HOSTS))
        return plan


SCALE_OUT, SCALE_IN = ScaleOut(), ScaleIn()
