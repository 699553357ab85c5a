"""A custom service run on chosen nodes, each node's outcome kept in the job record.

Unlike a lifecycle service, a custom service changes nothing pitrix manages (nodes, env,
metadata), so its failure is the job's and not the cluster's: every way it can fail is raised as
``ServiceFailed``, which the job ends as rolled back (the cluster stays ``active``).

Parameters reach the command as exported environment variables, shell-quoted in front of it (or,
``params_style: json_arg``, as one shell-quoted JSON object argument after it); the
agent (or SSH, for a silent agent on channel ssh) runs the result. Each node's command id is
``<job>-<service>-<node>``, and an agent runs an id once ever, so a step run again after a
restart waits for the results of the commands it posted before, never running them twice.
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.runtime.keys import job_key
from pitrix.runtime.ownership import LostOwnership
from pitrix.runtime.records import Job
from pitrix.runtime.spec import AppSpec, CustomService, EnvParam, Service
from pitrix.runtime.steps.context import JobContext, OperationError, RolledBack
from pitrix.runtime.steps.nodes import members
from pitrix.runtime.steps.services import ENDED, REPORT_GRACE, command_line, exit_message, run_commands
from pitrix.sealing import REDACTED
from pitrix.store import StoreUnavailable
from pitrix.store.types import Op

# The per-node results live in one etcd value (the job): their output tails share this budget,
# each at most OUTPUT_TAIL, so a service run on a thousand nodes still fits etcd's request limit.
RESULTS_BUDGET = 512 * 1024
OUTPUT_TAIL = 4096
# Seconds beyond the service's own timeout to wait for its last result (the agent's report).


class ServiceFailed(RolledBack):
    """A custom service failed on some node (or could not be run): the job fails, the cluster
    stays ``active``, since nothing pitrix manages was changed."""


def hide(text: str, secrets: list[str]) -> str:
    """``text`` with every secret value in it replaced (a command may echo its password)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


async def run_custom(
    ctx: JobContext,
    service: str,
    node_ids: list[str],
    params: dict[str, dict[str, str]],
    secrets: list[str],
) -> str:
    """Run ``service`` on the nodes with each role's ``params``; keep each node's result in the job."""
    try:
        return await _run(ctx, service, node_ids, params, secrets)
    except (ServiceFailed, LostOwnership, StoreUnavailable):
        raise  # pitrixd's own etcd cut off is no failure of the service: the job resumes (executor.py)
    except Exception as exc:  # metad unreachable, a node gone: still nothing of the cluster's changed
        raise ServiceFailed(f"{service}: {hide(str(exc) or type(exc).__name__, secrets)}") from exc


async def _run(
    ctx: JobContext,
    service: str,
    node_ids: list[str],
    params: dict[str, dict[str, str]],
    secrets: list[str],
) -> str:
    targets = [n for n in await members(ctx, node_ids) if n.instance_id]
    missing = sorted(set(node_ids) - {n.node_id for n in targets})
    if missing:
        raise ServiceFailed(f"{service}: node(s) {', '.join(missing)} no longer run")
    started = time.monotonic()
    specs = {n.node_id: ctx.cluster.app.role(n.role).custom_services[service] for n in targets}
    commands = [
        (
            n,
            Service(
                cmd=service_command(specs[n.node_id], params.get(n.role, {})),
                timeout=specs[n.node_id].timeout,
            ),
        )
        for n in targets
    ]
    timeout = max(s.timeout for s in specs.values()) + REPORT_GRACE
    reported = await run_commands(ctx, service, commands, complete=False)
    tail = max(256, min(OUTPUT_TAIL, RESULTS_BUDGET // max(1, len(targets))))
    results: dict[str, dict[str, Any]] = {}
    for node in targets:
        got = reported[node.node_id]
        status = got.get("status")
        results[node.node_id] = {
            "instance_id": node.instance_id,
            "status": status if status in ENDED else "no result",
            "exit_code": got.get("exit_code"),
            "started": got.get("started"),
            "finished": got.get("finished"),
            "output_tail": hide(str(got.get("output_tail") or ""), secrets)[-tail:]
            if status in ENDED
            else f"no result within {timeout:.0f}s",
        }
    await _record(ctx, results)
    if secrets:  # the command line holds the passwords: not left in metad once it has run
        for node in targets:
            if results[node.node_id]["status"] in ENDED:
                await ctx.metad.delete_data(ks.cmd(ctx.cid, node.instance_id))
    failed = {n: r for n, r in results.items() if r["status"] != "successful"}
    if failed:
        said = "; ".join(f"{n} {_outcome(r, ctx.cluster.app)}" for n, r in sorted(failed.items()))
        raise ServiceFailed(f"{service} failed on {len(failed)} of {len(results)} node(s): {said}")
    return f"{service} on {len(targets)} node(s) in {time.monotonic() - started:.2f}s"


def _outcome(result: dict[str, Any], app: AppSpec) -> str:
    if result["status"] == "no result":
        return result["output_tail"]
    last = result["output_tail"].strip().splitlines()[-1:] or [""]
    code = result["exit_code"]
    meaning = exit_message(app, code)
    return (
        (f"exit {code}" if code is not None else "timed out")
        + (f" ({meaning})" if meaning else "")
        + (f": {last[0]}" if last[0] else "")
    )


def json_value(param: EnvParam | None, text: str) -> Any:
    """A parameter's checked text as the JSON value of its type (an AppCenter script reads the
    numbers and booleans of its JSON argument as such)."""
    if param is None:
        return text
    if param.type == "boolean":
        return text == "true"
    if param.type == "integer":
        return int(text)
    if param.type == "number":
        try:
            return int(text)
        except ValueError:
            return float(text)
    return text


def service_command(service: CustomService, params: dict[str, str]) -> str:
    """The command line of ``service`` given ``params`` (checked texts, passwords opened).

    ``params_style: env`` exports each parameter in front of ``cmd``; ``json_arg`` appends them
    as one JSON object, shell-quoted into a single argument (AppCenter's ``backup.sh '{...}'``).
    """
    if service.params_style != "json_arg":
        return command_line(service.cmd, params)
    typed = {key: json_value(service.params.get(key), value) for key, value in sorted(params.items())}
    return f"{service.cmd} {shlex.quote(json.dumps(typed, separators=(',', ':'), ensure_ascii=False))}"


async def _record(ctx: JobContext, results: dict[str, dict[str, Any]]) -> None:
    """The results into the job as stored (its arguments sealed as they are), not the opened copy
    the plan holds."""
    key = job_key(ctx.cid, ctx.job.id)
    kv = await ctx.store.get(key)
    if kv is None:
        raise OperationError(f"job {ctx.job.id} is gone")
    stored = Job.model_validate_json(kv.value)
    await ctx.write(Op("put", key, stored.model_copy(update={"results": results}).dump()))
