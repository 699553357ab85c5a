"""delete: the ``stop`` then ``destroy`` services run on the nodes, the cluster leaves the metadata,
its instances are terminated, and its metadata cluster goes with its last cluster (unless the
runtime keeps it). A failing service fails the job (with the node's output) unless ``force``.

An AppCenter package runs ``destroy`` first, then ``stop``, each in ascending order; a failing
destroy whose service does not allow force calls the delete off (the cluster back to ``active``)
unless ``force`` (steps/destroying.py)."""

from __future__ import annotations

from functools import partial
from typing import Any

from pydantic import StrictBool

from pitrix.runtime.actions.base import Accepted, Action, Args, Desk, InvalidRequest
from pitrix.runtime.actions.phases import delete_volumes
from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster, State
from pitrix.runtime.steps import instances, nodes, publishing, reserved_ips, services, teardown
from pitrix.runtime.steps.context import JobContext


class DeleteArgs(Args):
    # a failing (or unreachable) stop/destroy is recorded in the step's detail and the delete goes on
    force: StrictBool = False
    # the state the delete was asked in: from ``active`` every node must run the services, from
    # ``failed``/``stopped`` the nodes that cannot are expected and left out
    was: State | None = None


class Delete(Action[DeleteArgs]):
    name = "delete"
    running = "deleting"
    sources = ("pending", "active", "failed", "stopped")
    done = "deleted"
    rolled_back = "active"  # an AppCenter package's destroy vetoed it: nothing was removed
    arguments = DeleteArgs

    async def accept(self, desk: Desk, cluster: Cluster, body: dict[str, Any]) -> Accepted:
        unknown = sorted(set(body) - {"force"})
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: not a field of a delete (it takes force)")
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise InvalidRequest("force: must be true or false")
        return Accepted(self, DeleteArgs(force=force, was=cluster.state))

    async def recheck(self, desk: Desk, cluster: Cluster) -> None:
        """Refused while others still link to it: their ``/self/links/<name>`` would go empty under
        their running apps. Run on the fresh read: a linking create that lands after this check
        rewrites this cluster's record, so the delete's guard fails and it looks again."""
        linking = [
            f"{other.id} (links.{name})"
            for other in await desk.repo.clusters(cluster.owner)
            if other.state not in ("deleting", "deleted")
            for name, target in sorted(other.links.items())
            if target == cluster.id
        ]
        if linking:
            raise LifecycleError(
                f"cluster {cluster.id} is linked to by {', '.join(linking)}: delete those clusters first"
            )

    def plan(self, ctx: JobContext, args: DeleteArgs) -> Plan:
        plan = Plan(self.name)
        node_ids = nodes.node_ids(ctx)
        strict = args.was == "active"
        appcenter = services.appcenter(ctx.cluster)
        # stop, then destroy, each in reverse role order (as a stop: dependents before what they use);
        # an AppCenter package: destroy (which may veto) then stop, each in ascending order
        for service in ("destroy", "stop") if appcenter else ("stop", "destroy"):
            layers = services.service_layers(ctx.cluster, service)
            for roles in layers if appcenter else reversed(layers):
                members = [n for n in node_ids if nodes.split_id(n)[0] in roles]
                if members:
                    veto = appcenter and service == "destroy"
                    run = partial(teardown.teardown_service, force=args.force, strict=strict, veto=veto)
                    plan.then(as_step(f"{service}:{'+'.join(roles)}", run, ctx, service, members))
        plan.then(as_step("unregister", publishing.unregister_cluster, ctx))
        plan.then(as_step("terminate", instances.terminate, ctx, None))
        delete_volumes(plan, ctx, None)
        if reserved_ips.declared(ctx.cluster):  # its reserved addresses, once no node holds them
            plan.then(as_step("release-ips", reserved_ips.release, ctx))
        plan.then(as_step("release-metadata", publishing.release_metadata, ctx))
        return plan
