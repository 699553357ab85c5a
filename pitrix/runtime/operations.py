"""The steps of a cluster's plans, each idempotent and reading its inputs from etcd.

A step never trusts memory from an earlier step: nodes, instance ids and addresses are read back
from the node records, so a step re-run by a restarted daemon sees what its previous run left.
Instances are looked up by their deterministic names before any is created.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Iterable
from typing import Any

from pitrix.logs import get_logger
from pitrix.metad.client import MetadManagementClient
from pitrix.providers.base import InstanceSpec, Provider
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.booting import wait_booted
from pitrix.runtime.fallback import run_over_ssh, silent_agents
from pitrix.runtime.keypairs import KeyPairs, RuntimeKeyPair
from pitrix.runtime.records import (
    DEFAULT_HEARTBEAT_INTERVAL,
    Cluster,
    Job,
    MetadataCluster,
    Node,
    cluster_data_prefix,
    node_key,
    token_key,
)
from pitrix.runtime.spec import Service
from pitrix.runtime.userdata import (
    AGENT_CONFIG,
    AGENT_LOG,
    SECRET_FILES,
    agent_files,
    agent_userdata,
)
from pitrix.sealing import Sealer, create_sealed, get_sealed
from pitrix.ssh import SshError, SshSessions, console_keys, quote
from pitrix.store import Store

BOOT_TIMEOUT = 300.0
AGENT_TIMEOUT = 120.0
# How long a bootstrap token buys a certificate once its mapping is written: the agent asks within
# seconds of its instance running; the register step (start, recover) writes it again.
BOOTSTRAP_TOKEN_TTL = 900.0


class OperationError(Exception):
    """A step could not reach its goal; the message says which node and why."""


class RolledBack(OperationError):
    """An env rollout failed on a batch and every node it touched was given its previous values."""


class ClusterOperations:
    """Everything the plans of one cluster's job do, as methods usable as steps."""

    def __init__(
        self,
        store: Store,
        cluster: Cluster,
        job: Job,
        provider: Provider,
        metadata: MetadataCluster,
        metad: MetadManagementClient,
        agents: AgentStatus,
        *,
        sealer: Sealer,
        keypairs: KeyPairs | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    ) -> None:
        self.store = store
        self.sealer = sealer  # bootstrap tokens are sealed in etcd
        self.heartbeat_interval = heartbeat_interval  # the runtime's, for the agents it configures
        self.keypairs = keypairs or KeyPairs(store, sealer)  # the service's own: etcd and cloud asked once
        self.cluster = cluster
        self.job = job
        self.provider = provider
        self.metadata = metadata
        self.metad = metad
        self.agents = agents
        self.log = get_logger("pitrix.operations", cluster_id=cluster.id, job_id=job.id)
        self._key_pair: RuntimeKeyPair | None = None

    @property
    def over_ssh(self) -> bool:
        return self.cluster.channel == "ssh"

    async def key_pair(self) -> RuntimeKeyPair:
        """pitrixd's key pair for the cluster's owner on its runtime (in etcd and in the cloud)."""
        if self._key_pair is None:
            self._key_pair = await self.keypairs.get(self.provider, self.cluster.owner, self.cluster.runtime)
        return self._key_pair

    async def ssh_sessions(self) -> SshSessions:
        """SSH sessions with the key pair, host keys read from the console where the cloud's
        description has none."""
        return SshSessions((await self.key_pair()).private_key, console=console_keys(self.provider))

    @property
    def cid(self) -> str:
        return self.cluster.id

    # -- node records -----------------------------------------------------------------------------

    async def nodes(self, role: str | None = None) -> list[Node]:
        kvs, _ = await self.store.get_prefix(cluster_data_prefix(self.cid) + "nodes/")
        nodes = [Node.model_validate_json(kv.value) for kv in kvs]
        nodes = [n for n in nodes if role is None or n.role == role]
        return sorted(nodes, key=lambda n: (n.role, n.index))

    async def save(self, node: Node) -> None:
        await self.store.put(node_key(self.cid, node.node_id), node.dump())

    async def plan_nodes(self, counts: dict[str, int]) -> str:
        """Node records for every role up to its count (existing ones are kept)."""
        existing = {n.node_id for n in await self.nodes()}
        added = []
        for role, count in counts.items():
            for index in range(1, count + 1):
                node_id = f"{role}-{index}"
                if node_id not in existing:
                    node = Node(node_id=node_id, role=role, index=index, name=f"{self.cid}-{node_id}")
                    await self.save(node)
                    added.append(node_id)
        return f"planned {', '.join(added)}" if added else "nothing to plan"

    async def members(self, node_ids: Iterable[str]) -> list[Node]:
        wanted = set(node_ids)
        return [n for n in await self.nodes() if n.node_id in wanted]

    # -- instances --------------------------------------------------------------------------------

    async def run_instances(self, node_ids: list[str]) -> str:
        """Create the nodes' instances, after looking each one up by its name."""
        nodes = await self.members(node_ids)
        existing = {i.name: i for i in await self.provider.describe_instances(name_prefix=f"{self.cid}-")}
        to_create: list[Node] = []
        for node in nodes:
            found = existing.get(node.name)
            if found is not None:
                if node.instance_id != found.instance_id:
                    await self.save(
                        node.model_copy(update={"instance_id": found.instance_id, "status": "created"})
                    )
            else:
                to_create.append(node)
        if not to_create:
            return f"{len(nodes)} instances already exist"
        # Channel ssh: the agent comes over SSH once the instance is known (bootstrap_agents), so
        # the instance gets pitrixd's public key and no userdata; rest: userdata boots the agent.
        key_pair = (await self.key_pair()).cloud_id if self.over_ssh else ""
        tokens = {n.node_id: await self.bootstrap_token(n.node_id) for n in to_create if not self.over_ssh}
        specs = [
            InstanceSpec(
                name=node.name,
                image=self.cluster.app.role(node.role).image_for(self.provider.name),
                cpu=self.cluster.app.role(node.role).cpu,
                memory=self.cluster.app.role(node.role).memory,
                userdata=""
                if self.over_ssh
                else agent_userdata(self.agent_files(node.role, tokens[node.node_id])),
                key_pair=key_pair,
                tags={
                    "pitrix:cluster": self.cid,
                    "pitrix:owner": self.cluster.owner,
                    "pitrix:node": node.node_id,
                },
            )
            for node in to_create
        ]
        created = await self.provider.run_instances(specs)
        by_name = {i.name: i for i in created}
        for node in to_create:
            instance = by_name.get(node.name)
            if instance is None:
                raise OperationError(f"node {node.node_id}: the cloud did not return instance {node.name}")
            await self.save(
                node.model_copy(update={"instance_id": instance.instance_id, "status": "created"})
            )
        return f"created {len(to_create)} instances"

    @property
    def tls(self) -> bool:
        return bool(self.metadata.issuer_pem)

    async def bootstrap_token(self, node_id: str) -> str:
        """The node's one secret for fetching its first certificate, stored before any VM holds it.

        One per node incarnation: a replaced node (recover) gets a new one, see forget_instances.
        """
        key = token_key(self.cid, node_id)
        token = await get_sealed(self.store, key, self.sealer)
        if token is None:
            token = await create_sealed(self.store, key, secrets.token_urlsafe(32), self.sealer)
        return token.decode()

    async def fresh_token(self, node_id: str) -> str:
        """A new bootstrap token for the node, replacing the one it had (channel ssh: pushed with
        the agent's files, so an agent whose certificate lapsed while stopped can fetch another)."""
        token = secrets.token_urlsafe(32)
        await self.store.put(token_key(self.cid, node_id), token)
        return token

    def _mapping(self, node: Node) -> dict[str, Any]:
        return {
            "instance_id": node.instance_id,
            "cluster_id": self.cid,
            "role": node.role,
            "ip": node.ip,
            "owner": self.cluster.owner,
        }

    def _token_fields(self, token: str) -> dict[str, Any]:
        """A mapping's bootstrap fields: the token's hash and the moment it stops buying."""
        return {
            "bootstrap_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "bootstrap_expires": time.time() + BOOTSTRAP_TOKEN_TTL,
        }

    def agent_files(
        self, role_name: str, token: str = "", cert_pem: bytes = b"", key_pem: bytes = b""
    ) -> dict[str, bytes]:
        """What the node's agent is configured with: userdata writes it, or SSH pushes it."""
        role = self.cluster.app.role(role_name)
        check = role.health_check
        return agent_files(
            [self.metadata.instance_url],
            # metad's server certificate is signed by its issuer, known since its metad got it.
            ca_pem=self.metadata.issuer_cert_pem if self.tls else b"",
            bootstrap_token=token,
            cert_pem=cert_pem,
            key_pem=key_pem,
            heartbeat_interval=self.heartbeat_interval,
            health_cmd=check.cmd if check else "",
            health_interval=check.interval if check else 10.0,
            templates=role.templates,
        )

    async def wait_running(self, node_ids: list[str]) -> str:
        nodes = await self.members(node_ids)
        missing = [n.node_id for n in nodes if not n.instance_id]
        if missing:
            raise OperationError(f"nodes {', '.join(missing)} have no instance")
        instances = await wait_booted(self.provider, [n.instance_id for n in nodes], BOOT_TIMEOUT)
        by_id = {i.instance_id: i for i in instances}
        for node in nodes:
            ip = by_id[node.instance_id].private_ip
            if node.ip != ip or node.status == "created":
                await self.save(node.model_copy(update={"ip": ip, "status": "running"}))
        return f"{len(nodes)} running"

    async def _instance_ids(self, node_ids: list[str]) -> list[str]:
        nodes = await self.members(node_ids)
        missing = [n.node_id for n in nodes if not n.instance_id]
        if missing:
            raise OperationError(f"nodes {', '.join(missing)} have no instance")
        return [n.instance_id for n in nodes]

    async def stop_instances(self, node_ids: list[str]) -> str:
        """Stop the nodes' instances (the provider skips those already stopped)."""
        ids = await self._instance_ids(node_ids)
        await self.provider.stop_instances(ids)
        return f"{len(ids)} instances stopped"

    async def start_instances(self, node_ids: list[str]) -> str:
        """Start the nodes' instances (the provider skips those already running)."""
        ids = await self._instance_ids(node_ids)
        await self.provider.start_instances(ids)
        return f"{len(ids)} instances started"

    async def terminate(self, node_ids: list[str] | None = None) -> str:
        """Terminate the nodes' instances (all of the cluster's when ``node_ids`` is None)."""
        nodes = await self.nodes() if node_ids is None else await self.members(node_ids)
        names = {n.name for n in nodes}
        found = await self.provider.describe_instances(name_prefix=f"{self.cid}-")
        ids = sorted({i.instance_id for i in found if i.name in names or node_ids is None})
        if ids:
            await self.provider.terminate_instances(ids)
        for node in nodes:
            await self.store.delete(token_key(self.cid, node.node_id))
            await self.store.delete(node_key(self.cid, node.node_id))
        return f"terminated {len(ids)} instances"

    # -- metadata ---------------------------------------------------------------------------------

    def _node_env(self, role_name: str, values: dict[str, str] | None = None) -> dict[str, str]:
        """What a node of the role publishes as ``/self/host/env``: its effective parameters.

        Every node carries its own copy so an env change can reach a canary node before the rest;
        passwords stay out of it (hosts are visible cluster-wide) and live only in the role's env.
        """
        role = self.cluster.app.role(role_name)
        merged = self._env().get(role_name, {})
        if values:
            merged = dict(merged, **values)
        return {k: v for k, v in merged.items() if k in role.env and role.env[k].type != "password"}

    def _host_entry(self, node: Node) -> dict[str, Any]:
        role = self.cluster.app.role(node.role)
        env = self._node_env(node.role)
        return {
            **({"env": env} if env else {}),
            "instance_id": node.instance_id,
            "ip": node.ip,
            "sid": str(node.index),
            "gid": node.role,
            "node_id": node.node_id,
            "role": node.role,
            "cpu": str(role.cpu),
            "memory": str(role.memory),
            "status": "active",
        }

    def _cluster_entry(self) -> dict[str, Any]:
        return {
            "cluster_id": self.cid,
            "app_id": self.cluster.app.name,
            "app_version": self.cluster.app.version,
            "owner": self.cluster.owner,
            "runtime": self.cluster.runtime,
            "global_uuid": self.cid,
        }

    def _env(self) -> dict[str, dict[str, str]]:
        env: dict[str, dict[str, str]] = {}
        for role in self.cluster.app.roles:
            merged = role.env_defaults()
            merged.update(self.cluster.env.get(role.name, {}))
            if merged:
                env[role.name] = merged
        return env

    async def register(self, node_ids: list[str], *, adding: bool = False) -> str:
        """Publish the cluster and the nodes to metad, then map each instance to its /self view."""
        nodes = await self.members(node_ids)
        hosts: dict[str, dict[str, Any]] = {}
        for node in nodes:
            hosts.setdefault(node.role, {})[node.instance_id] = self._host_entry(node)
        data: dict[str, Any] = {"cluster": self._cluster_entry(), "hosts": hosts}
        env = self._env()
        if env:
            data["env"] = env
        health = {
            role.name: {"cmd": check.cmd, "interval": str(check.interval), "timeout": str(check.timeout)}
            for role in self.cluster.app.roles
            if (check := role.health_check) is not None
        }
        if health:  # the agent's /self/health once metad projects it; agent.toml carries it until then
            data["health"] = health
        if self.cluster.app.endpoints:
            data["endpoints"] = {
                name: {"port": str(e.port), "protocol": e.protocol}
                for name, e in self.cluster.app.endpoints.items()
            }
        if self.cluster.links:  # metad shows a link only while both clusters have the same owner
            data["links"] = dict(self.cluster.links)
        if adding:
            data["adding-hosts"] = hosts
        for node in nodes:
            mapping = self._mapping(node)
            if self.tls:
                mapping.update(self._token_fields(await self.bootstrap_token(node.node_id)))
            await self.metad.put_mapping(node.instance_id, mapping)
        await self.metad.put_data(f"/clusters/{self.cid}", data)
        for node in nodes:
            if node.status != "registered":
                await self.save(node.model_copy(update={"status": "registered"}))
        return f"registered {len(nodes)} nodes"

    async def mark_leaving(self, node_ids: list[str]) -> str:
        nodes = await self.members(node_ids)
        deleting: dict[str, dict[str, Any]] = {}
        for node in nodes:
            deleting.setdefault(node.role, {})[node.instance_id] = self._host_entry(node)
            if node.status != "leaving":
                await self.save(node.model_copy(update={"status": "leaving"}))
        if deleting:
            await self.metad.put_data(f"/clusters/{self.cid}", {"deleting-hosts": deleting})
        return f"{len(nodes)} nodes leaving"

    async def _forget_instance(self, role: str, instance_id: str, why: str) -> None:
        """An instance leaves the metadata: its certificates first, so it can read nothing more."""
        if self.tls:
            await self.metad.revoke_instance(instance_id, why)
        await self.metad.delete_data(f"/clusters/{self.cid}/hosts/{role}/{instance_id}")
        await self.metad.delete_data(f"/clusters/{self.cid}/cmd/{instance_id}")
        await self.metad.delete_mapping(instance_id)
        await self.metad.delete_data(f"/_pitrix/status/{self.cid}/{instance_id}")

    async def unregister(self, node_ids: list[str]) -> str:
        """Remove the nodes from the metadata (hosts, commands, mappings, reported status)."""
        for node in await self.members(node_ids):
            if node.instance_id:
                await self._forget_instance(node.role, node.instance_id, f"{self.job.action} {self.job.id}")
        return "unregistered"

    async def unregister_instances(self, old: dict[str, str]) -> str:
        """Remove replaced instances (``{node_id: instance_id}``) from the metadata."""
        for node_id, instance_id in old.items():
            await self._forget_instance(node_id.rsplit("-", 1)[0], instance_id, f"replaced by {self.job.id}")
        return f"unregistered {', '.join(sorted(old.values()))}"

    async def terminate_instances(self, old: dict[str, str]) -> str:
        """Terminate replaced instances by id (the cloud skips those already gone)."""
        await self.provider.terminate_instances(sorted(old.values()))
        return f"terminated {', '.join(sorted(old.values()))}"

    async def forget_instances(self, old: dict[str, str]) -> str:
        """Node records that still name a replaced instance go back to ``planned``.

        The old instance is terminated by now, so the name lookup in run-instances no longer finds
        it and creates the replacement under the same deterministic name.
        """
        reset = []
        for node in await self.members(list(old)):
            if node.instance_id == old[node.node_id]:
                await self.store.delete(token_key(self.cid, node.node_id))
                await self.save(node.model_copy(update={"instance_id": "", "ip": "", "status": "planned"}))
                reset.append(node.node_id)
        return f"reset {', '.join(reset)}" if reset else "already reset"

    async def clear(self, section: str) -> str:
        await self.metad.delete_data(f"/clusters/{self.cid}/{section}")
        return f"cleared {section}"

    async def unregister_cluster(self) -> str:
        for node in await self.nodes():
            if node.instance_id:
                if self.tls:
                    await self.metad.revoke_instance(node.instance_id, f"cluster deleted by {self.job.id}")
                await self.metad.delete_mapping(node.instance_id)
        await self.metad.delete_data(f"/clusters/{self.cid}")
        await self.metad.delete_data(f"/_pitrix/status/{self.cid}")
        return "metadata removed"

    # -- agents -----------------------------------------------------------------------------------

    async def bootstrap_agents(self, node_ids: list[str], *, fresh_since: float = 0.0) -> str:
        """Channel ssh: write each node's agent files over SSH and start its agent.

        Nodes whose agent already heartbeats (since ``fresh_since``, when given) are skipped, so a
        re-run after a crash only touches the ones still silent. With TLS, each gets a fresh
        one-time bootstrap token (its hash mapped first) and makes its own key: no private key
        is made anywhere but where it is used.
        """
        members = await self.members(node_ids)
        silent = await silent_agents(
            self.metad, self.cid, [n.instance_id for n in members], since=fresh_since
        )
        nodes = [n for n in members if n.instance_id in silent]
        if not nodes:
            return "every agent already reporting"
        instances = {
            i.instance_id: i
            for i in await self.provider.describe_instances(instance_ids=[n.instance_id for n in nodes])
        }
        missing = [n.node_id for n in nodes if n.instance_id not in instances]
        if missing:
            raise OperationError(f"nodes {', '.join(missing)}: the cloud no longer has their instances")
        started = time.monotonic()
        async with await self.ssh_sessions() as ssh:

            async def bootstrap(node: Node) -> None:
                instance = instances[node.instance_id]
                token = ""
                if self.tls:
                    token = await self.fresh_token(node.node_id)
                    mapping = self._mapping(node) | self._token_fields(token)
                    await self.metad.put_mapping(node.instance_id, mapping)
                files = self.agent_files(node.role, token)
                for path, data in files.items():
                    await ssh.put_file(instance, path, data, 0o600 if path in SECRET_FILES else 0o644)
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
        failures = [str(r) for r in results if isinstance(r, BaseException)]
        if failures:
            raise OperationError(f"SSH bootstrap failed on {len(failures)} node(s): {'; '.join(failures)}")
        return f"{len(nodes)} agents started over SSH in {time.monotonic() - started:.2f}s"

    async def wait_agents(self, node_ids: list[str]) -> str:
        nodes = await self.members(node_ids)
        ids = [n.instance_id for n in nodes]
        try:
            await self.agents.wait_for(
                lambda _: all(self.agents.has_heartbeat(i) for i in ids), AGENT_TIMEOUT
            )
        except TimeoutError:
            silent = [n.node_id for n in nodes if not self.agents.has_heartbeat(n.instance_id)]
            raise OperationError(
                f"no heartbeat within {AGENT_TIMEOUT:.0f}s from {', '.join(silent)}"
            ) from None
        return f"{len(ids)} agents reporting"

    async def converge(self, node_ids: list[str]) -> str:
        """Until each node has applied the cluster's metadata as it is now.

        Agents report the revision of the view they applied, and a view's revision only moves when
        that view changes, so the step bumps the cluster's ``generation`` (part of every node's
        view) and waits for every node to report that write's revision or a later one.
        """
        nodes = await self.members(node_ids)
        ids = [n.instance_id for n in nodes]
        revision = await self.metad.put_data(
            f"/clusters/{self.cid}/cluster", {"generation": f"{time.time():.6f}"}
        )
        try:
            await self.agents.wait_for(
                lambda _: all(self.agents.applied_revision(i) >= revision for i in ids), AGENT_TIMEOUT
            )
        except TimeoutError:
            behind = [
                f"{n.node_id} (at {self.agents.applied_revision(n.instance_id)})"
                for n in nodes
                if self.agents.applied_revision(n.instance_id) < revision
            ]
            raise OperationError(
                f"not converged to revision {revision} within {AGENT_TIMEOUT:.0f}s: {', '.join(behind)}"
            ) from None
        return f"{len(ids)} nodes applied revision {revision}"

    # -- env rollout ------------------------------------------------------------------------------

    def _host_path(self, node: Node) -> str:
        return f"/clusters/{self.cid}/hosts/{node.role}/{node.instance_id}"

    async def _give_env(self, nodes: list[Node], values: dict[str, dict[str, str]]) -> int:
        """Write each node's env values; the revision every node must apply (the last write's)."""
        revision = 0
        for node in nodes:
            env = self._node_env(node.role, values.get(node.role, {}))
            revision = await self.metad.put_data(self._host_path(node), {"env": env})
        return revision

    def _converged(self, node: Node, revision: int) -> bool | str:
        """True once applied cleanly at ``revision`` or later; the failure text if applied badly."""
        applied = self.agents.applied(node.instance_id)
        if int(applied.get("revision") or 0) < revision:
            return False
        resources = applied.get("resources") or {}
        bad = [
            f"{name}: {(result or {}).get('error') or 'failed'}"
            for name, result in sorted(resources.items())
            if not isinstance(result, dict) or not result.get("ok")
        ]
        return "; ".join(bad) if bad else True

    async def _await_batch(self, nodes: list[Node], revision: int) -> dict[str, str]:
        """Until every node applied ``revision``: the failures by node id (empty when all are clean)."""
        try:
            await self.agents.wait_for(
                lambda _: all(self._converged(n, revision) is not False for n in nodes), AGENT_TIMEOUT
            )
        except TimeoutError:
            late = [n.node_id for n in nodes if self._converged(n, revision) is False]
            return {
                node_id: f"did not apply revision {revision} within {AGENT_TIMEOUT:.0f}s" for node_id in late
            }
        failures: dict[str, str] = {}
        for node in nodes:
            verdict = self._converged(node, revision)
            if isinstance(verdict, str):
                failures[node.node_id] = verdict
        return failures

    async def roll_env(
        self,
        batch: list[str],
        done_before: list[str],
        values: dict[str, dict[str, str]],
        previous: dict[str, dict[str, str]],
    ) -> str:
        """Give ``batch`` the new values and wait until each node applied them cleanly.

        On a failure, every node touched so far (this batch and those before it) gets its previous
        values back, and the step fails with :class:`RolledBack` naming the node and resource.
        """
        nodes = await self.members(batch)
        revision = await self._give_env(nodes, values)
        failures = await self._await_batch(nodes, revision)
        if not failures:
            return f"{', '.join(n.node_id for n in nodes)} applied revision {revision}"
        touched = await self.members([*done_before, *batch])
        self.log.warning(
            "env rollout failed; restoring", failures=failures, nodes=[n.node_id for n in touched]
        )
        restored = await self._give_env(touched, previous)
        after = await self._await_batch(touched, restored)
        reason = "; ".join(f"{node_id}: {why}" for node_id, why in failures.items())
        if after:
            problems = "; ".join(f"{node_id}: {why}" for node_id, why in after.items())
            raise OperationError(f"{reason}; restoring the previous values failed too: {problems}")
        raise RolledBack(f"{reason}; previous values restored on {len(touched)} node(s)")

    async def commit_env(self, values: dict[str, dict[str, str]]) -> str:
        """The roles' own env (``/self/env``) takes the new values once every node has them."""
        revision = 0
        for role, changed in values.items():
            revision = await self.metad.put_data(f"/clusters/{self.cid}/env/{role}", changed)
        return f"role env at revision {revision}"

    async def _run_silent(
        self, service: str, targets: list[tuple[Node, Service]], commands: dict[str, str]
    ) -> None:
        """The fallback path: the service over SSH on nodes whose agent is silent (channel ssh)."""
        self.log.warning(
            "agents silent; running over SSH", service=service, nodes=[n.node_id for n, _ in targets]
        )
        found = await self.provider.describe_instances(instance_ids=[n.instance_id for n, _ in targets])
        instances = {i.instance_id: i for i in found}
        async with await self.ssh_sessions() as ssh:
            await asyncio.gather(
                *(
                    run_over_ssh(
                        ssh,
                        self.metad,
                        self.cid,
                        instances[node.instance_id],
                        commands[node.instance_id],
                        svc.cmd,
                        float(svc.timeout),
                    )
                    for node, svc in targets
                    if node.instance_id in instances
                )
            )

    async def run_service(self, service: str, node_ids: list[str]) -> str:
        """Run one lifecycle service on the nodes whose role defines it, and wait for every result."""
        nodes = await self.members(node_ids)
        targets: list[tuple[Node, Service]] = []
        taken: dict[str, int] = {}
        for node in nodes:  # sorted by role and index: nodes_to_execute_on picks the first ones
            svc = self.cluster.app.role(node.role).services.get(service)  # type: ignore[call-overload]
            if svc is None:
                continue
            if svc.nodes_to_execute_on is not None and taken.get(node.role, 0) >= svc.nodes_to_execute_on:
                continue
            taken[node.role] = taken.get(node.role, 0) + 1
            targets.append((node, svc))
        if not targets:
            return f"no {service} service"
        started = time.monotonic()
        silent = (
            await silent_agents(self.metad, self.cid, [n.instance_id for n, _ in targets])
            if self.over_ssh
            else set()
        )
        commands = {}
        for node, svc in targets:
            command_id = f"{self.job.id}-{service}-{node.node_id}"
            commands[node.instance_id] = command_id
            if node.instance_id in silent:
                continue  # over SSH below, and never also by its agent
            await self.metad.post_data(
                f"/clusters/{self.cid}/cmd/{node.instance_id}",
                {"id": command_id, "cmd": svc.cmd, "timeout": str(svc.timeout)},
            )
        timeout = max(svc.timeout for _, svc in targets) + 30
        if silent:
            await self._run_silent(service, [(n, s) for n, s in targets if n.instance_id in silent], commands)

        def finished(_: object) -> bool:
            return all(
                (self.agents.command_result(iid, cmd) or {}).get("status") in ("successful", "failed")
                for iid, cmd in commands.items()
            )

        try:
            await self.agents.wait_for(finished, timeout)
        except TimeoutError:
            unanswered = [
                iid
                for iid, cmd in commands.items()
                if (self.agents.command_result(iid, cmd) or {}).get("status") not in ("successful", "failed")
            ]
            raise OperationError(
                f"{service}: no result within {timeout:.0f}s from {', '.join(unanswered)}"
            ) from None
        failures = []
        for iid, cmd in commands.items():
            result = self.agents.command_result(iid, cmd) or {}
            if result.get("status") != "successful":
                tail = (result.get("output_tail") or "").strip().splitlines()[-3:]
                failures.append(f"{iid} exit {result.get('exit_code')}: {' | '.join(tail)}")
        if failures:
            raise OperationError(f"{service} failed on {len(failures)} node(s): " + "; ".join(failures))
        return f"{service} on {len(targets)} nodes in {time.monotonic() - started:.2f}s"


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
