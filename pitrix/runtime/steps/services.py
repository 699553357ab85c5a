"""A lifecycle service (init, start, stop, scale_in ...) run on the nodes whose role defines it.

Commands go to metad for each node's agent; on channel ssh, nodes whose agent is silent run the
service over SSH instead (never both), and the step waits for every node's result.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.runtime.fallback import run_over_ssh, silent_agents
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.spec import SERVICE_PARAM_PATTERN, AppSpec, Service
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.nodes import members
from pitrix.runtime.steps.published import publish


def service_layers(cluster: Cluster, service: str, post_start: bool | None = None) -> list[list[str]]:
    """Roles grouped by the service's ``order``: each group runs after the one before.

    ``post_start`` keeps only the roles whose service has that ``post_start_service`` flag.
    """
    orders: dict[int, list[str]] = {}
    for role in cluster.app.roles:
        svc = role.services.get(service)  # type: ignore[call-overload]
        if svc is not None and (post_start is None or svc.post_start_service == post_start):
            orders.setdefault(svc.order, []).append(role.name)
    return [orders[o] for o in sorted(orders)]


async def _run_silent(
    ctx: JobContext, service: str, targets: list[tuple[Node, Service]], commands: dict[str, str]
) -> None:
    """The fallback path: the service over SSH on nodes whose agent is silent (channel ssh)."""
    ctx.log.warning("agents silent; running over SSH", service=service, nodes=[n.node_id for n, _ in targets])
    found = await ctx.provider.describe_instances(instance_ids=[n.instance_id for n, _ in targets])
    instances = {i.instance_id: i for i in found}
    async with await ctx.ssh_sessions() as ssh:
        await asyncio.gather(
            *(
                run_over_ssh(
                    ssh,
                    ctx.metad,
                    ctx.cid,
                    instances[node.instance_id],
                    commands[node.instance_id],
                    svc.cmd,
                    float(svc.timeout),
                )
                for node, svc in targets
                if node.instance_id in instances
            )
        )


SHELL_NAME = SERVICE_PARAM_PATTERN  # a shell variable's name


async def run_service(ctx: JobContext, service: str, node_ids: list[str]) -> str:
    """Run one lifecycle service on the nodes whose role defines it, and wait for every result.

    A service with ``publish`` has its output (a JSON object) merged into the cluster's
    ``published`` metadata once every node succeeded (``steps.published``).
    """
    nodes = await members(ctx, node_ids)
    targets: list[tuple[Node, Service]] = []
    taken: dict[str, int] = {}
    for node in nodes:  # sorted by role and index: nodes_to_execute_on picks the first ones
        svc = ctx.cluster.app.role(node.role).services.get(service)  # type: ignore[call-overload]
        if svc is None:
            continue
        if svc.nodes_to_execute_on is not None and taken.get(node.role, 0) >= svc.nodes_to_execute_on:
            continue
        taken[node.role] = taken.get(node.role, 0) + 1
        targets.append((node, svc))
    if not targets:
        return f"no {service} service"
    started = time.monotonic()
    results = await run_commands(ctx, service, targets)
    raise_failures(f"{service} failed", [n for n, _ in targets], results, app=ctx.cluster.app)
    detail = f"{service} on {len(targets)} nodes in {time.monotonic() - started:.2f}s"
    outputs = [(node.node_id, results[node.node_id]) for node, svc in targets if svc.publish]
    if outputs:  # AppCenter's custom metadata (members)
        detail += f"; {await publish(ctx, service, outputs)}"
    return detail


def exportable(params: dict[str, str]) -> dict[str, str]:
    """The parameters a shell can export: names such as AppCenter's ``4lw.commands.whitelist``
    or ``node.ip`` are valid parameters but no shell variable (``export`` would fail the
    command), so they reach the command by metadata or its JSON argument only."""
    return {k: v for k, v in params.items() if re.fullmatch(SHELL_NAME, k)}


def command_line(cmd: str, params: dict[str, str]) -> str:
    """``cmd`` behind an ``export`` of every parameter that is a shell variable, each value
    shell-quoted."""
    params = exportable(params)
    if not params:
        return cmd
    exports = " ".join(f"{key}={shlex.quote(value)}" for key, value in sorted(params.items()))
    return f"export {exports}\n{cmd}"


async def first_live(ctx: JobContext, candidates: list[Node]) -> Node | None:
    """The first node whose agent heartbeats, asked of metad now (the job's watch view of the
    agents may not have replayed yet when the plan's first step runs)."""
    placed = [n for n in candidates if n.instance_id]
    silent = await silent_agents(ctx.metad, ctx.cid, [n.instance_id for n in placed])
    return next((n for n in placed if n.instance_id not in silent), None)


def raise_failures(
    what: str, nodes: list[Node], results: dict[str, dict[str, Any]], *, app: AppSpec | None = None
) -> None:
    """OperationError naming each node whose command did not succeed (its exit code, what the
    app's locale says that code means, and the last lines of output), if any did not."""
    failures = []
    for node in nodes:
        result = results[node.node_id]
        if result.get("status") != "successful":
            tail = (result.get("output_tail") or "").strip().splitlines()[-3:]
            code = result.get("exit_code")
            meaning = exit_message(app, code) if app is not None else ""
            said = f" ({meaning})" if meaning else ""
            failures.append(f"{node.instance_id} exit {code}{said}: {' | '.join(tail)}")
    if failures:
        raise OperationError(f"{what} on {len(failures)} node(s): " + "; ".join(failures))


ENDED = ("successful", "failed")
REPORT_GRACE = 30.0  # beyond a command's own timeout, for its agent's report to arrive


async def run_commands(
    ctx: JobContext, label: str, targets: list[tuple[Node, Service]], *, complete: bool = True
) -> dict[str, dict[str, Any]]:
    """Run each target's ``cmd`` on its node and wait for all: node id → the agent's result.

    ``label`` names the commands (``<job>-<label>-<node>``), so a re-run of the step finds the
    results of the commands it posted before instead of running them again. A node whose agent is
    silent (channel ssh) runs its command over SSH instead, never also by its agent. When results
    are still missing after the longest timeout (plus ``REPORT_GRACE``), the step fails naming the
    nodes; with ``complete=False`` the results there are returned as they stand.
    """
    silent = (
        await silent_agents(ctx.metad, ctx.cid, [n.instance_id for n, _ in targets])
        if ctx.over_ssh
        else set()
    )
    commands = {}
    for node, svc in targets:
        command_id = f"{ctx.job.id}-{label}-{node.node_id}"
        commands[node.instance_id] = command_id
        if node.instance_id in silent:
            continue  # over SSH below, and never also by its agent
        await ctx.metad.post_data(
            ks.cmd(ctx.cid, node.instance_id),
            {"id": command_id, "cmd": svc.cmd, "timeout": str(svc.timeout)},
        )
    timeout = max(svc.timeout for _, svc in targets) + REPORT_GRACE
    if silent:
        await _run_silent(ctx, label, [(n, s) for n, s in targets if n.instance_id in silent], commands)
    agents = ctx.agents

    def ended(iid: str) -> bool:
        return (agents.command_result(iid, commands[iid]) or {}).get("status") in ENDED

    try:
        await agents.wait_for(lambda _: all(ended(iid) for iid in commands), timeout)
    except TimeoutError:
        if complete:
            unanswered = [iid for iid in commands if not ended(iid)]
            raise OperationError(
                f"{label}: no result within {timeout:.0f}s from {', '.join(unanswered)}"
            ) from None
    return {
        node.node_id: agents.command_result(node.instance_id, commands[node.instance_id]) or {}
        for node, _ in targets
    }


def appcenter(cluster: Cluster) -> bool:
    """Whether the cluster runs an AppCenter package (its service order and semantics apply)."""
    return cluster.app.profile == "appcenter"


def exit_message(app: AppSpec, code: Any) -> str:
    """The app's own words for a service's exit status ``code`` (its locale's ``err_code<N>``),
    English first, else the first language that has it; "" when none does (or no code)."""
    if code is None or isinstance(code, bool) or not app.locale:
        return ""
    key = f"err_code{code}"
    english = app.locale.get("en", {})
    if key in english:
        return english[key]
    for lang in sorted(app.locale):
        if key in app.locale[lang]:
            return app.locale[lang][key]
    return ""
