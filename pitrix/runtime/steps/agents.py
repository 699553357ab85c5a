"""The nodes' agents: started over SSH where the channel needs it, then waited on as they report."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from pitrix.metad import keyspace as ks
from pitrix.metad.client import MetadClientError
from pitrix.runtime.fallback import silent_agents
from pitrix.runtime.ownership import LostOwnership
from pitrix.runtime.passphraseless import push_over_ssh
from pitrix.runtime.records import Node
from pitrix.runtime.steps.context import JobContext, OperationError
from pitrix.runtime.steps.identity import agent_files, fresh_token, mapping, token_fields
from pitrix.runtime.steps.nodes import members
from pitrix.runtime.userdata import AGENT_CONFIG, AGENT_LOG, SECRET_FILES
from pitrix.ssh import SshError, quote
from pitrix.store import StoreUnavailable

AGENT_TIMEOUT = 120.0
# How many more AGENT_TIMEOUTs the wait grants while metad refuses first heartbeats as busy.
BUSY_EXTENSIONS = 4


async def bootstrap_agents(ctx: JobContext, node_ids: list[str], *, fresh_since: float = 0.0) -> str:
    """Channel ssh: write each node's agent files over SSH and start its agent.

    Nodes whose agent already heartbeats (since ``fresh_since``, when given) are skipped, so a
    re-run after a crash only touches the ones still silent. With TLS, each gets a fresh
    one-time bootstrap token (its hash mapped first) and makes its own key: no private key
    is made anywhere but where it is used.
    """
    wanted = await members(ctx, node_ids)
    silent = await silent_agents(ctx.metad, ctx.cid, [n.instance_id for n in wanted], since=fresh_since)
    nodes = [n for n in wanted if n.instance_id in silent]
    if not nodes:
        return "every agent already reporting"
    instances = {
        i.instance_id: i
        for i in await ctx.provider.describe_instances(instance_ids=[n.instance_id for n in nodes])
    }
    missing = [n.node_id for n in nodes if n.instance_id not in instances]
    if missing:
        raise OperationError(f"nodes {', '.join(missing)}: the cloud no longer has their instances")
    started = time.monotonic()
    async with await ctx.ssh_sessions() as ssh:

        async def bootstrap(node: Node) -> None:
            instance = instances[node.instance_id]
            token = ""
            if ctx.tls:
                token = await fresh_token(ctx, node.node_id)
                await ctx.metad.put_mapping(node.instance_id, mapping(ctx, node) | token_fields(token))
            files = agent_files(ctx, node.role, token, node_id=node.node_id)
            for path, data in files.items():
                await ssh.put_file(instance, path, data, 0o600 if path in SECRET_FILES else 0o644)
            await push_over_ssh(ctx, node.role, ssh, instance)
            state = quote("/var/lib/pitrix-agent")
            log_dir = quote("/var/log")
            # The agent's state is its own (the key it makes, its ledger): owner only.
            status, output = await ssh.run(instance, f"mkdir -p {log_dir} {state} && chmod 700 {state}")
            if status != 0:
                raise SshError(f"{node.node_id}: mkdir failed ({status}): {output.strip()}")
            start = (
                f"nohup pitrix-agent -config-file {quote(AGENT_CONFIG)} "
                f">> {quote(AGENT_LOG)} 2>&1 < /dev/null &"
            )
            status, output = await ssh.run(instance, start)
            if status != 0:
                raise SshError(f"{node.node_id}: starting the agent failed ({status}): {output.strip()}")

        results = await asyncio.gather(*(bootstrap(n) for n in nodes), return_exceptions=True)
    for result in results:
        if isinstance(result, StoreUnavailable | LostOwnership):
            raise result  # pitrixd's etcd or claim, not the nodes: the job resumes (executor.py)
    failures = [str(r) for r in results if isinstance(r, BaseException)]
    if failures:
        raise OperationError(f"SSH bootstrap failed on {len(failures)} node(s): {'; '.join(failures)}")
    return f"{len(nodes)} agents started over SSH in {time.monotonic() - started:.2f}s"


async def wait_agents(ctx: JobContext, node_ids: list[str]) -> str:
    """Until every node's agent heartbeats, for AGENT_TIMEOUT; and again (up to BUSY_EXTENSIONS
    times) while metad refused first heartbeats as busy in the last one: a metad shedding the
    first beats of a burst of new agents is not a silent agent, and must not fail the create."""
    nodes = await members(ctx, node_ids)
    ids = [n.instance_id for n in nodes]
    agents = ctx.agents
    refused = await _first_beats_refused(ctx)
    for extension in range(BUSY_EXTENSIONS + 1):
        try:
            await agents.wait_for(lambda _: all(agents.has_heartbeat(i) for i in ids), AGENT_TIMEOUT)
        except TimeoutError:
            before, refused = refused, await _first_beats_refused(ctx)
            busy = before is not None and refused is not None and refused > before
            if busy and extension < BUSY_EXTENSIONS:
                continue
            silent = [n.node_id for n in nodes if not agents.has_heartbeat(n.instance_id)]
            waited = AGENT_TIMEOUT * (extension + 1)
            raise OperationError(f"no heartbeat within {waited:g}s from {', '.join(silent)}") from None
        break
    return f"{len(ids)} agents reporting"


async def _first_beats_refused(ctx: JobContext) -> int | None:
    """How many first heartbeats metad has refused as busy since it started (None: it cannot
    tell, being older than that count or unreachable now)."""
    try:
        health = await ctx.metad.healthz()
    except (aiohttp.ClientError, OSError, TimeoutError, MetadClientError):
        return None  # the wait goes on without it: the heartbeats are what it waits for
    beats = health.get("first_beats")
    refused = beats.get("refused") if isinstance(beats, dict) else None
    return refused if isinstance(refused, int) else None


async def converge(ctx: JobContext, node_ids: list[str]) -> str:
    """Until each node has applied the cluster's metadata as it is now.

    Agents report the revision of the view they applied, and a view's revision only moves when
    that view changes, so the step bumps the cluster's ``generation`` (part of every node's
    view) and waits for every node to report that write's revision or a later one.
    """
    nodes = await members(ctx, node_ids)
    ids = [n.instance_id for n in nodes]
    agents = ctx.agents
    revision = await ctx.metad.put_data(ks.cluster_info(ctx.cid), {ks.GENERATION: f"{time.time():.6f}"})
    try:
        await agents.wait_for(
            lambda _: all(agents.applied_revision(i) >= revision for i in ids), AGENT_TIMEOUT
        )
    except TimeoutError:
        behind = [
            f"{n.node_id} (at {agents.applied_revision(n.instance_id)})"
            for n in nodes
            if agents.applied_revision(n.instance_id) < revision
        ]
        raise OperationError(
            f"not converged to revision {revision} within {AGENT_TIMEOUT:.0f}s: {', '.join(behind)}"
        ) from None
    return f"{len(ids)} nodes applied revision {revision}"


def health_timeout(ctx: JobContext, nodes: list[Node]) -> float:
    """How long the nodes get to pass their checks: at least three rounds of the slowest check.

    The agent checks from the moment it starts, so the verdict at hand when the services have just
    started is usually a failure; the next round comes an ``interval`` later.
    """
    rounds = [
        3 * (check.interval + check.timeout)
        for node in nodes
        if (check := ctx.cluster.app.role(node.role).health_check) is not None
    ]
    return max([AGENT_TIMEOUT, *rounds])


async def wait_healthy(ctx: JobContext, node_ids: list[str], *, timeout: float | None = None) -> str:
    """Until every node whose role declares a health check reports healthy from a check made now.

    Started services may not be serving yet, and a cluster must not be called active while its
    checks fail. Only reports metad took after the step began count (by revision): a node's last
    verdict from before a stop says nothing about it now; and only a passed check (not a node
    still "ok" below its ``unhealthy_threshold``). Roles without a check are not waited on.
    """
    nodes = await members(ctx, node_ids)
    checked = [n for n in nodes if ctx.cluster.app.role(n.role).health_check is not None]
    if not checked:
        return "no health checks"
    since = int((await ctx.metad.healthz())["revision"])
    deadline = health_timeout(ctx, checked) if timeout is None else timeout
    agents = ctx.agents
    try:
        await agents.wait_for(lambda _: all(agents.passing(n.instance_id, since) for n in checked), deadline)
    except TimeoutError:
        unhealthy = []
        for node in checked:
            verdict = agents.passing(node.instance_id, since)
            if verdict:
                continue
            error = ((agents.health(node.instance_id) or {}).get("error") or "").strip()
            if verdict is None:
                earlier = f"; earlier: {error}" if error else ""
                unhealthy.append(f"{node.node_id} (no check reported since the step began{earlier})")
            else:
                unhealthy.append(f"{node.node_id} (unhealthy: {error or 'no output'})")
        raise OperationError(f"not healthy within {deadline:.0f}s: {'; '.join(unhealthy)}") from None
    return f"{len(checked)} nodes healthy"


def health_verdict(ctx: JobContext, node: Node, since: int) -> bool | str:
    """A node's health after a change (a restart, a rollout's batch) made before metad revision
    ``since``: True once it passed a check reported after ``since`` (or its role has no check);
    the failed check's output once such a report says it is unhealthy (past its own threshold, so
    a check that fails once while the service comes back is forgiven); False while neither came."""
    check = ctx.cluster.app.role(node.role).health_check
    if check is None:
        return True
    agents = ctx.agents
    verdict = agents.passing(node.instance_id, since)
    if verdict:
        return True
    if verdict is False and agents.unhealthy(node.instance_id, check.unhealthy_threshold):
        return ((agents.health(node.instance_id) or {}).get("error") or "").strip() or "no output"
    return False
