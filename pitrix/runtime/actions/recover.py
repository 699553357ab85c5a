"""recover: dead nodes are replaced by new instances under the same deterministic names.

The live members are told as in a scale-in followed by a scale-out: the dead instance appears
under ``deleting-hosts`` while they run ``scale_in`` (an etcd ``member remove``), its replacement
under ``adding-hosts`` with ``replaces`` = the dead instance's id while they run
``pre_scale_out``, and ``scale_out`` once it is up.

Without ``nodes`` it replaces every node whose agent's heartbeat is gone (asked of metad), which
is also what the recovery monitor starts. It is the way out of a halted auto-recovery too: an
operator who has looked decides, and the halt is cleared when the job succeeds.
"""

from __future__ import annotations

from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.actions.phases import boot, delete_volumes, init_start
from pitrix.runtime.metadata import StatusUnavailable
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster
from pitrix.runtime.steps import agents, instances, membership, nodes, operation_keys, publishing, services
from pitrix.runtime.steps.context import JobContext


class RecoverArgs(Args):
    nodes: dict[str, str]  # node id -> the instance it replaces


class Recover(Action[RecoverArgs]):
    name = "recover"
    running = "recovering"
    verb = "recover"
    arguments = RecoverArgs
    summary = "replace nodes with new instances (by default those whose agent stopped reporting)"
    request_schema = {
        "type": "object",
        "properties": {"nodes": {"type": "array", "items": {"type": "string"}}},
    }
    body_required = False

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        wanted = body.get("nodes")
        if wanted is not None and (
            not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted)
        ):
            raise InvalidRequest("nodes: must be a list of node ids (e.g. web-2)")
        members = {n.node_id: n for n in await desk.repo.nodes(cluster.id)}
        if not wanted:
            wanted = await _silent_nodes(desk, cluster, members)
        unknown = [n for n in wanted if n not in members or not members[n].instance_id]
        if unknown:
            raise InvalidRequest(
                f"nodes: cluster {cluster.id} has no running node {', '.join(map(repr, unknown))}"
            )
        old = {n: members[n].instance_id for n in sorted(set(wanted))}
        return Accepted(self, RecoverArgs(nodes=old))

    def plan(self, ctx: JobContext, args: RecoverArgs) -> Plan:
        """The dead under deleting-hosts, scale_in on the live members, the old instances
        forgotten and terminated; the replacements booted under adding-hosts (same node ids,
        ``replaces`` naming the old instance), pre_scale_out on the live members, the
        replacements' init/start, scale_out on the live members; converge, clear both."""
        old = args.nodes
        node_ids = sorted(old)
        live = [n for n in nodes.node_ids(ctx) if n not in old]
        run = services.run_service
        plan = Plan(self.name)
        audit = operation_keys.wanted(ctx.cluster.app)
        if audit:  # AppCenter's packages read it while the recover's services run
            plan.then(as_step("rebuild-audit", operation_keys.mark_rebuild, ctx, node_ids))
        plan.then(as_step("mark-replaced", membership.mark_replaced, ctx, old))
        plan.then(as_step("scale_in", run, ctx, "scale_in", live))
        plan.then(as_step("unregister-old", publishing.unregister_instances, ctx, old))
        plan.then(as_step("terminate-old", instances.terminate_instances, ctx, old))
        delete_volumes(plan, ctx, node_ids)  # a replacement starts on a new, empty volume
        plan.then(as_step("forget-old", instances.forget_instances, ctx, old))
        boot(plan, ctx, node_ids, adding=True, replaces=old)
        plan.then(as_step("pre_scale_out", run, ctx, "pre_scale_out", live))
        init_start(plan, ctx, node_ids)
        plan.then(as_step("scale_out", run, ctx, "scale_out", live))
        plan.then(as_step("converge", agents.converge, ctx, nodes.node_ids(ctx)))
        plan.then(
            as_step("clear-adding-hosts", publishing.clear, ctx, ks.ADDING_HOSTS),
            as_step("clear-deleting-hosts", publishing.clear, ctx, ks.DELETING_HOSTS),
        )
        if audit:
            plan.then(as_step("clear-rebuild-audit", operation_keys.unmark, ctx, ks.REBUILD_AUDIT))
        return plan

    def commit(self, cluster: Cluster, args: RecoverArgs) -> dict[str, Any]:
        return {"recovery_halted": None}


async def _silent_nodes(desk: Desk, cluster: Cluster, members: dict[str, Any]) -> list[str]:
    try:
        status = await desk.metadata.status(cluster.owner, cluster.runtime, cluster.id)
    except StatusUnavailable as exc:
        raise InvalidRequest(
            f"nodes: cannot tell which nodes are silent: {exc}; name the nodes to replace"
        ) from None
    silent = [
        n.node_id
        for n in members.values()
        if n.instance_id and "heartbeat" not in (status.get(n.instance_id) or {})
    ]
    if not silent:
        raise InvalidRequest("nodes: every node's agent is reporting; nothing to recover")
    return silent
