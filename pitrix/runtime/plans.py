"""Which steps each action runs, in which order: the lifecycle written down as data.

Node sets come from the job's arguments, fixed when the action was accepted, so a resumed plan
works on exactly the nodes the original one did.
"""

from __future__ import annotations

from functools import partial

from pitrix.runtime.operations import ClusterOperations, service_layers
from pitrix.runtime.plan import Plan, Step, as_step
from pitrix.runtime.records import Cluster, Job


def _service_steps(
    plan: Plan,
    ops: ClusterOperations,
    cluster: Cluster,
    service: str,
    node_ids: list[str],
    *,
    reverse: bool = False,
    post_start: bool | None = None,
) -> None:
    """One layer per ``order`` group of roles defining ``service`` (last group first if ``reverse``)."""
    layers = service_layers(cluster, service, post_start)
    suffix = ":post-start" if post_start else ""
    for roles in reversed(layers) if reverse else layers:
        members = [n for n in node_ids if n.rsplit("-", 1)[0] in roles]
        if members:
            name = f"{service}:{'+'.join(roles)}{suffix}"
            plan.then(as_step(name, ops.run_service, service, members))


def _init_start(plan: Plan, ops: ClusterOperations, cluster: Cluster, node_ids: list[str]) -> None:
    """init (roles that init before start), start, then the init of roles marked post_start_service."""
    _service_steps(plan, ops, cluster, "init", node_ids, post_start=False)
    _service_steps(plan, ops, cluster, "start", node_ids)
    _service_steps(plan, ops, cluster, "init", node_ids, post_start=True)


def _boot(plan: Plan, ops: ClusterOperations, node_ids: list[str], *, adding: bool = False) -> None:
    """New instances for the nodes, up to their agents reporting (create, scale out, recover)."""
    plan.then(as_step("run-instances", ops.run_instances, node_ids))
    plan.then(as_step("wait-running", ops.wait_running, node_ids))
    register = partial(ops.register, adding=True) if adding else ops.register
    plan.then(as_step("register", register, node_ids))
    if ops.cluster.channel == "ssh":
        plan.then(as_step("bootstrap-agents", ops.bootstrap_agents, node_ids))
    plan.then(as_step("wait-agents", ops.wait_agents, node_ids))


def all_node_ids(cluster: Cluster, counts: dict[str, int] | None = None) -> list[str]:
    counts = counts if counts is not None else cluster.counts
    return [f"{role}-{i}" for role, count in counts.items() for i in range(1, count + 1)]


def create_plan(cluster: Cluster, job: Job, ops: ClusterOperations) -> Plan:
    nodes = all_node_ids(cluster)
    plan = Plan("create")
    plan.then(as_step("plan-nodes", ops.plan_nodes, cluster.counts))
    _boot(plan, ops, nodes)
    _init_start(plan, ops, cluster, nodes)
    plan.then(as_step("converge", ops.converge, nodes))
    return plan


def stop_plan(cluster: Cluster, job: Job, ops: ClusterOperations) -> Plan:
    """Services stop in reverse role order (an lb before its web nodes), then the instances."""
    nodes = all_node_ids(cluster)
    plan = Plan("stop")
    _service_steps(plan, ops, cluster, "stop", nodes, reverse=True)
    plan.then(as_step("stop-instances", ops.stop_instances, nodes))
    return plan


def start_plan(cluster: Cluster, job: Job, ops: ClusterOperations) -> Plan:
    """Instances boot (their userdata starts the agents again), then services start in role order.

    A stopped node's last heartbeat may still be in metad until its lease runs out, so the agents
    prove they are back by applying a fresh revision, not by a heartbeat key being present.
    """
    nodes = all_node_ids(cluster)
    plan = Plan("start")
    plan.then(as_step("start-instances", ops.start_instances, nodes))
    plan.then(as_step("wait-running", ops.wait_running, nodes))
    plan.then(as_step("register", ops.register, nodes))
    if ops.cluster.channel == "ssh":  # the agents died with the instances; their heartbeats linger
        bootstrap = partial(ops.bootstrap_agents, fresh_since=job.created)
        plan.then(as_step("bootstrap-agents", bootstrap, nodes))
    plan.then(as_step("wait-agents", ops.converge, nodes))
    _service_steps(plan, ops, cluster, "start", nodes)
    plan.then(as_step("converge", ops.converge, nodes))
    return plan


def scale_out_plan(cluster: Cluster, job: Job, ops: ClusterOperations) -> Plan:
    role, old, new = job.args["role"], int(job.args["from"]), int(job.args["to"])
    added = [f"{role}-{i}" for i in range(old + 1, new + 1)]
    counts = dict(cluster.counts, **{role: new})
    existing = [n for n in all_node_ids(cluster, counts) if n not in added]
    plan = Plan("scale_out")
    plan.then(as_step("plan-nodes", ops.plan_nodes, counts))
    _boot(plan, ops, added, adding=True)
    _init_start(plan, ops, cluster, added)
    plan.then(as_step("scale_out", ops.run_service, "scale_out", existing))
    plan.then(as_step("converge", ops.converge, existing + added))
    plan.then(as_step("clear-adding-hosts", ops.clear, "adding-hosts"))
    return plan


def scale_in_plan(cluster: Cluster, job: Job, ops: ClusterOperations) -> Plan:
    role, old, new = job.args["role"], int(job.args["from"]), int(job.args["to"])
    leaving = [f"{role}-{i}" for i in range(new + 1, old + 1)]
    remaining = [n for n in all_node_ids(cluster, dict(cluster.counts, **{role: old})) if n not in leaving]
    plan = Plan("scale_in")
    plan.then(as_step("mark-leaving", ops.mark_leaving, leaving))
    plan.then(as_step("scale_in", ops.run_service, "scale_in", remaining))
    plan.then(as_step("stop-leaving", ops.run_service, "stop", leaving))
    plan.then(as_step("destroy-leaving", ops.run_service, "destroy", leaving))
    plan.then(as_step("unregister", ops.unregister, leaving))
    plan.then(as_step("terminate", ops.terminate, leaving))
    plan.then(as_step("converge", ops.converge, remaining))
    plan.then(as_step("clear-deleting-hosts", ops.clear, "deleting-hosts"))
    return plan


def delete_plan(cluster: Cluster, job: Job, ops: ClusterOperations, release: Step) -> Plan:
    plan = Plan("delete")
    plan.then(as_step("unregister", ops.unregister_cluster))
    plan.then(as_step("terminate", ops.terminate, None))
    plan.then(release)
    return plan


def recover_plan(cluster: Cluster, job: Job, ops: ClusterOperations) -> Plan:
    """Replace dead nodes: forget and terminate the old instances, then boot them as a scale-out does."""
    old: dict[str, str] = job.args["nodes"]
    nodes = sorted(old)
    plan = Plan("recover")
    plan.then(as_step("unregister-old", ops.unregister_instances, old))
    plan.then(as_step("terminate-old", ops.terminate_instances, old))
    plan.then(as_step("forget-old", ops.forget_instances, old))
    _boot(plan, ops, nodes)
    _init_start(plan, ops, cluster, nodes)
    plan.then(as_step("converge", ops.converge, all_node_ids(cluster)))
    return plan


def rollout_batches(node_ids: list[str], canary: int, max_in_flight: int) -> list[list[str]]:
    """The canary batch (if any), then batches of ``max_in_flight`` nodes."""
    batches = [node_ids[:canary]] if canary else []
    rest = node_ids[canary:]
    batches += [rest[i : i + max_in_flight] for i in range(0, len(rest), max_in_flight)]
    return [b for b in batches if b]


def update_env_plan(cluster: Cluster, job: Job, ops: ClusterOperations) -> Plan:
    """Batch after batch, each gated on its nodes' clean apply; then the roles' env is committed."""
    values: dict[str, dict[str, str]] = job.args["env"]
    previous: dict[str, dict[str, str]] = job.args["previous"]
    nodes = [n for n in all_node_ids(cluster) if n.rsplit("-", 1)[0] in values]
    policy = cluster.app.update_policy
    plan = Plan("update_env")
    done: list[str] = []
    for number, batch in enumerate(rollout_batches(nodes, policy.canary, policy.max_in_flight), start=1):
        name = "canary" if number == 1 and policy.canary else f"batch-{number}"
        plan.then(as_step(name, ops.roll_env, batch, list(done), values, previous))
        done += batch
    plan.then(as_step("commit-env", ops.commit_env, values))
    return plan


BUILDERS = {
    "create": create_plan,
    "stop": stop_plan,
    "start": start_plan,
    "scale_out": scale_out_plan,
    "scale_in": scale_in_plan,
    "update_env": update_env_plan,
    "recover": recover_plan,
}
