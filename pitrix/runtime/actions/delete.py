"""delete: the cluster leaves the metadata, its instances are terminated, and its metadata cluster
goes with its last cluster (unless the runtime keeps it)."""

from __future__ import annotations

from pitrix.runtime.actions.base import Action, Desk, NoArgs
from pitrix.runtime.actions.phases import delete_volumes
from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.plan import Plan, as_step
from pitrix.runtime.records import Cluster
from pitrix.runtime.steps import instances, publishing
from pitrix.runtime.steps.context import JobContext


class Delete(Action[NoArgs]):
    name = "delete"
    running = "deleting"
    sources = ("pending", "active", "failed", "stopped")
    done = "deleted"

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

    def plan(self, ctx: JobContext, args: NoArgs) -> Plan:
        plan = Plan(self.name)
        plan.then(as_step("unregister", publishing.unregister_cluster, ctx))
        plan.then(as_step("terminate", instances.terminate, ctx, None))
        delete_volumes(plan, ctx, None)
        plan.then(as_step("release-metadata", publishing.release_metadata, ctx))
        return plan
