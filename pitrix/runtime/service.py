"""The runtime: every cluster's state machine, its supervisor task, and the records behind them.

An action is accepted in three moves: the machine checks it is allowed, the new state and the job
are written to etcd in one transaction, and only then the cluster's supervisor starts the plan.
A restarted runtime reloads every cluster and resumes each unfinished job at its first unfinished
step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import aiohttp

from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.metad.client import MetadClientError
from pitrix.providers.base import Provider, ProviderError
from pitrix.providers.registry import load_provider
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.executor import DEFAULT_RETRY, StepFailed, execute
from pitrix.runtime.journal import Journal
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.machine import (
    ACTION_STATE,
    TRANSITIONAL,
    ChangedMeanwhile,
    ClusterModel,
    Lifecycle,
    LifecycleError,
)
from pitrix.runtime.metadata import MetadataClusters
from pitrix.runtime.operations import ClusterOperations, RolledBack
from pitrix.runtime.ownership import LostOwnership, Ownership, owner_key
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.plans import BUILDERS, delete_plan
from pitrix.runtime.records import (
    CHANNELS,
    Channel,
    Cluster,
    Job,
    Node,
    Runtime,
    StepRecord,
    cluster_data_prefix,
    cluster_key,
    job_key,
    new_id,
    runtime_key,
)
from pitrix.runtime.recovery import RecoveryPolicy, watch_for_dead_nodes
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.secret_env import env_context, open_cluster, open_job, seal_passwords
from pitrix.runtime.signals import ClusterSignals
from pitrix.runtime.spec import SpecError, parse_spec
from pitrix.sealing import Sealer
from pitrix.store import Store, StoreError
from pitrix.store.types import KV, Compare, Op

REPORT_TIMEOUT = 5.0
# The recovery monitor's pause after its watch failed, doubling up to the cap while it keeps failing.
MONITOR_FIRST_PAUSE = 0.5
LINK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# A create whose link targets keep changing under it is refused after this many checks.
CREATE_ATTEMPTS = 5
MONITOR_MAX_PAUSE = 30.0
# Jobs one replica runs at once. Beyond some hundreds, every job's steps share the same cores
# and each one's deadlines (an agent's first heartbeat within 120 s) measure the crowd instead
# of the cluster: 1,000 creates at once on a 2-core host failed 621 on heartbeats that way.
# Waiting jobs stay in etcd as they were accepted and start in turn, oldest claim first.
DEFAULT_MAX_JOBS = 100
# The step a job waiting for a free job slot shows (see _run_job).
WAIT_SLOT_STEP = "wait-slot"


def _decoded(value: Any) -> Any:
    """metad keeps agents' reports as JSON text; the answer carries them as strings."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


class NotFound(LookupError):
    """No such cluster, job or runtime (for this owner)."""


class InvalidRequest(ValueError):
    """A request's content is wrong; the message names the field."""


class RuntimeService:
    def __init__(
        self,
        store: Store,
        recovery: RecoveryPolicy | None = None,
        *,
        sealer: Sealer,
        replica: str | None = None,
        owner_ttl: int = 10,
        metadata_tls: bool = True,
        retry: RetryPolicy | None = None,
        max_jobs: int = DEFAULT_MAX_JOBS,
    ) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs: must be at least 1, not {max_jobs}")
        self.store = store
        self.sealer = sealer  # secrets in the records are sealed with it (pitrix.sealing)
        self.max_jobs = max_jobs
        self._job_slots = asyncio.Semaphore(max_jobs)
        self.recovery = recovery or RecoveryPolicy()
        self.step_retry = retry or DEFAULT_RETRY
        self.replica = replica or new_id("replica")
        self.ownership = Ownership(store, self.replica, owner_ttl, self._consider, self._drop_all)
        self._monitors: dict[str, asyncio.Task[None]] = {}
        self.lifecycle = Lifecycle()
        self.models: dict[str, ClusterModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._providers: dict[str, Provider] = {}
        self._signals = ClusterSignals()
        self.keypairs = KeyPairs(store, sealer)  # one per service: each pair read and imported once
        self.metadata = MetadataClusters(
            store, self.provider_for, sealer=sealer, tls=metadata_tls, keypairs=self.keypairs
        )
        self.log = get_logger("pitrix.runtime")

    # -- life of the service ----------------------------------------------------------------------

    async def start(self) -> None:
        """Claim every cluster nobody owns (or this replica owned before), resume their jobs.

        From then on, clusters whose owner key disappears (a dead replica's lease ran out) or whose
        record changes are considered again, so another replica's clusters are adopted and resumed.
        """
        await self.ownership.start()
        kvs, revision = await self.store.get_prefix("/clusters/")
        clusters = [self._load_cluster(kv.value) for kv in kvs]
        for cluster in clusters:
            self._sync_model(cluster)
        for cluster in clusters:
            await self._consider(cluster.id)
        self.ownership.follow(revision + 1)
        resumed = sum(1 for t in self._tasks.values() if not t.done())
        self.log.info("runtime started", clusters=len(self.models), resumed=resumed, replica=self.replica)

    async def _drop_all(self) -> None:
        """Stop every job and monitor here (they resume wherever the clusters are claimed next)."""
        tasks = list(self._tasks.values()) + list(self._monitors.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _sync_model(self, cluster: Cluster) -> ClusterModel:
        """The machine's model of ``cluster``, in the state etcd has (another replica may have moved it)."""
        model = self.models.get(cluster.id)
        if model is None:
            model = self.models[cluster.id] = self.lifecycle.add(cluster.id, cluster.state)
        elif model.state != cluster.state:
            self.lifecycle.revert(model, cluster.state)
        return model

    async def _consider(self, cid: str) -> None:
        """Drive ``cid`` here if this replica owns it (claiming it when nobody does), else let go."""
        busy = self._tasks.get(cid)
        if busy is not None and not busy.done():
            self._signals.changed(cid)
            return  # our own job is running it; its end decides what follows
        try:
            cluster = await self.get_cluster(cid)  # read after the check: a job ending now is seen
        except NotFound:
            return
        self._signals.changed(cid)  # waiters here learn of changes made by other replicas too
        if cluster.state == "deleted":
            await self.ownership.release(cid)
            return
        if not await self.ownership.claim(cid):
            monitor = self._monitors.pop(cid, None)
            if monitor is not None:
                monitor.cancel()
            return
        self._sync_model(cluster)
        if cluster.state in TRANSITIONAL and cluster.job_id:
            self._supervise(cid)
        elif cluster.state == "active":
            self._monitor(cluster)

    async def stop(self) -> None:
        """Stop supervising (jobs stay journaled and resume at the next start)."""
        await self._drop_all()
        await self.ownership.close()  # only then may other replicas adopt our clusters
        await self.metadata.close()
        for provider in self._providers.values():
            await provider.close()
        self._providers.clear()

    # -- runtimes ---------------------------------------------------------------------------------

    async def put_runtime(self, data: dict[str, Any]) -> Runtime:
        from pydantic import ValidationError

        try:
            runtime = Runtime.model_validate(data)
        except ValidationError as exc:
            item = exc.errors()[0]
            raise InvalidRequest(f"{'.'.join(map(str, item['loc']))}: {item['msg']}") from None
        try:
            provider = load_provider(runtime.provider, runtime.model_dump())
        except ProviderError as exc:
            raise InvalidRequest(str(exc)) from None
        await self._refuse_moving_metadata(runtime)
        await self.store.put(runtime_key(runtime.name), runtime.sealed(self.sealer))
        old = self._providers.pop(runtime.name, None)
        if old is not None:
            await old.close()
        self._providers[runtime.name] = provider
        return runtime

    async def _refuse_moving_metadata(self, runtime: Runtime) -> None:
        """A new placement would send the runtime's clusters to metadata clusters their agents do
        not know: it may change only while no cluster lives on the runtime."""
        kv = await self.store.get(runtime_key(runtime.name))
        if kv is None or (await self._load_runtime(kv)).placement == runtime.placement:
            return
        living = [
            c.id for c in await self.list_clusters() if c.runtime == runtime.name and c.state != "deleted"
        ]
        if living:
            raise InvalidRequest(
                f"placement: cannot change while runtime {runtime.name!r} has clusters "
                f"({', '.join(living[:5])}{', ...' if len(living) > 5 else ''}); delete them first"
            )

    async def get_runtime(self, name: str) -> Runtime:
        kv = await self.store.get(runtime_key(name))
        if kv is None:
            raise NotFound(f"runtime {name!r} does not exist")
        return await self._load_runtime(kv)

    async def list_runtimes(self) -> list[Runtime]:
        kvs, _ = await self.store.get_prefix("/runtimes/")
        return [await self._load_runtime(kv) for kv in kvs]

    async def _load_runtime(self, kv: KV) -> Runtime:
        """A runtime with its credentials opened; one stored in clear is sealed in place."""
        runtime, clear = Runtime.opened(kv.value, self.sealer)
        if clear:
            await self.store.compare_and_swap(kv.key, kv.mod_revision, runtime.sealed(self.sealer))
        return runtime

    async def provider_for(self, name: str) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            runtime = await self.get_runtime(name)
            provider = self._providers[name] = load_provider(runtime.provider, runtime.model_dump())
        return provider

    # -- reading clusters -------------------------------------------------------------------------

    async def get_cluster(self, cid: str, owner: str | None = None) -> Cluster:
        kv = await self.store.get(cluster_key(cid))
        if kv is None:
            raise NotFound(f"cluster {cid!r} does not exist")
        cluster = self._load_cluster(kv.value)
        if owner is not None and cluster.owner != owner:
            raise NotFound(f"cluster {cid!r} does not exist")
        return cluster

    async def list_clusters(self, owner: str | None = None, include_deleted: bool = False) -> list[Cluster]:
        kvs, _ = await self.store.get_prefix("/clusters/")
        clusters = [self._load_cluster(kv.value) for kv in kvs]
        return [
            c
            for c in sorted(clusters, key=lambda c: c.created)
            if (owner is None or c.owner == owner) and (include_deleted or c.state != "deleted")
        ]

    def _load_cluster(self, raw: bytes) -> Cluster:
        """A stored cluster, its password values sealed (one stored in clear is, from its next write)."""
        return seal_passwords(Cluster.model_validate_json(raw), self.sealer)

    async def nodes(self, cid: str) -> list[Node]:
        kvs, _ = await self.store.get_prefix(cluster_data_prefix(cid) + "nodes/")
        return sorted((Node.model_validate_json(kv.value) for kv in kvs), key=lambda n: (n.role, n.index))

    async def agent_reports(self, cluster: Cluster) -> dict[str, dict[str, Any]] | None:
        """What each node's agent last reported through metad, by instance id (heartbeat, health,
        applied revision and results); None when the metadata service cannot be asked right now."""
        record = await self.metadata.get(cluster.owner, cluster.runtime)
        if record is None or record.status != "ready" or not record.ip:
            return None
        try:
            tree = await asyncio.wait_for(
                self.metadata.client(record).get_data(f"/_pitrix/status/{cluster.id}"), REPORT_TIMEOUT
            )
        except (aiohttp.ClientError, OSError, TimeoutError, MetadClientError):
            return None
        reports: dict[str, dict[str, Any]] = {}
        for iid, entries in (tree or {}).items():
            if isinstance(entries, dict):
                reports[iid] = {key: _decoded(value) for key, value in entries.items()}
        return reports

    async def get_job(self, cid: str, job_id: str) -> Job:
        kv = await self.store.get(job_key(cid, job_id))
        if kv is None:
            raise NotFound(f"job {job_id!r} of cluster {cid!r} does not exist")
        return Job.model_validate_json(kv.value)

    async def job_steps(self, cid: str, job_id: str) -> list[StepRecord]:
        records = await Journal(self.store, cid, job_id).records()
        return sorted(records.values(), key=lambda r: r.started)

    async def wait(self, cid: str, until: Callable[[Cluster], Awaitable[bool]], timeout: float) -> Cluster:
        """Until ``await until(cluster)`` holds, checked again on every change (TimeoutError)."""

        async def waiting() -> Cluster:
            async with self._signals.listening(cid) as changed:
                while True:
                    changed.clear()
                    cluster = await self.get_cluster(cid)
                    if await until(cluster):
                        return cluster
                    await changed.wait()

        return await asyncio.wait_for(waiting(), timeout)

    # -- actions ----------------------------------------------------------------------------------

    async def create_cluster(
        self,
        *,
        owner: str,
        runtime: str,
        app: dict[str, Any],
        name: str = "",
        counts: dict[str, int] | None = None,
        links: dict[str, str] | None = None,
        channel: str = "rest",
    ) -> tuple[Cluster, Job]:
        if channel not in CHANNELS:
            raise InvalidRequest(f"channel: must be one of {', '.join(CHANNELS)}, got {channel!r}")
        try:
            spec = parse_spec(app)
        except SpecError as exc:
            raise InvalidRequest(f"app.{exc}") from None
        # A role without an image on this runtime's cloud fails now, naming it, not at its first VM.
        provider = (await self.get_runtime(runtime)).provider
        for spec_role in spec.roles:
            try:
                spec_role.image_for(provider)
            except SpecError as exc:
                raise InvalidRequest(f"app.{exc}") from None
        role_counts = {r.name: r.count for r in spec.roles}
        for role, count in (counts or {}).items():
            if role not in role_counts:
                raise InvalidRequest(f"counts.{role}: the app has no role {role!r}")
            if not isinstance(count, int) or not 0 <= count <= 1000:
                raise InvalidRequest(f"counts.{role}: must be a whole number from 0 to 1000")
            role_counts[role] = count
        checked, targets = await self._check_links(owner, runtime, links or {})
        cid = new_id("cl")
        cluster = Cluster(
            id=cid,
            name=name or spec.name,
            owner=owner,
            runtime=runtime,
            app=spec,
            counts=role_counts,
            links=checked,
            channel=cast(Channel, channel),
        )
        cluster = seal_passwords(cluster, self.sealer)  # a password's default moves to env, sealed
        model = self._sync_model(cluster)
        # Each link target is rewritten as read, in the create's transaction: the create fails if
        # a target changed since it was checked (another replica began deleting it), and a delete
        # that read a target before this create landed fails its own guard and looks again.
        attempt = 1
        while True:
            guards = [Compare(cluster_key(kv.key), "mod", "==", kv.mod_revision) for kv in targets]
            touches = [Op("put", cluster_key(kv.key), kv.value) for kv in targets]
            try:
                job = await self._act(cluster, model, "create", {}, guards=guards, writes=touches)
            except ChangedMeanwhile:
                # The id is new, so a target changed: its own job moved on (a busy cluster's
                # record is written often) or a delete began. Check the links again rather than
                # refuse a create that may be fine; a target being deleted is refused by name.
                if not targets or attempt == CREATE_ATTEMPTS:
                    raise
                attempt += 1
                _, targets = await self._check_links(owner, runtime, checked)
                continue
            return await self.get_cluster(cid), job

    async def _check_links(
        self, owner: str, runtime: str, links: dict[str, str]
    ) -> tuple[dict[str, str], list[KV]]:
        """Links name clusters of the same owner on the same runtime (one metad serves both).

        Another owner's cluster is reported exactly like a missing one, so a link says nothing
        about clusters its owner cannot see. Returns the links and each target's record as read
        (``key`` = its cluster id).
        """
        targets: dict[str, KV] = {}
        for name, target in links.items():
            if not isinstance(name, str) or not LINK_NAME.fullmatch(name):
                raise InvalidRequest(f"links.{name}: a link name is lower case letters, digits, - and _")
            if not isinstance(target, str):
                raise InvalidRequest(f"links.{name}: must be a cluster id")
            kv = await self.store.get(cluster_key(target))
            linked = Cluster.model_validate_json(kv.value) if kv is not None else None
            if kv is None or linked is None or linked.owner != owner:
                raise InvalidRequest(f"links.{name}: owner {owner} has no cluster {target!r}")
            targets[target] = KV(target, kv.value, kv.mod_revision)
            if linked.state in ("deleting", "deleted"):
                raise InvalidRequest(f"links.{name}: cluster {target} is {linked.state}")
            if linked.runtime != runtime:
                raise InvalidRequest(
                    f"links.{name}: cluster {target} runs on runtime {linked.runtime!r}, not {runtime!r}"
                )
        return dict(links), list(targets.values())

    async def scale(self, cid: str, role: str, count: int, owner: str | None = None) -> Job:
        cluster = await self.get_cluster(cid, owner)
        try:
            cluster.app.role(role)
        except SpecError:
            raise InvalidRequest(f"role: cluster {cid} has no role {role!r}") from None
        if not isinstance(count, int) or not 0 <= count <= 1000:
            raise InvalidRequest("count: must be a whole number from 0 to 1000")
        current = cluster.counts.get(role, 0)
        if count == current:
            raise InvalidRequest(f"count: role {role} already has {count} nodes")
        action = "scale_out" if count > current else "scale_in"
        return await self._act(
            cluster, self._model(cid), action, {"role": role, "from": current, "to": count}
        )

    async def stop_cluster(self, cid: str, owner: str | None = None) -> Job:
        """Stop services (reverse role order) and instances; the cluster keeps its nodes."""
        cluster = await self.get_cluster(cid, owner)
        return await self._act(cluster, self._model(cid), "stop", {})

    async def start_cluster(self, cid: str, owner: str | None = None) -> Job:
        """Start a stopped cluster's instances, wait for their agents, start services in role order."""
        cluster = await self.get_cluster(cid, owner)
        return await self._act(cluster, self._model(cid), "start", {})

    async def update_env(self, cid: str, env: dict[str, Any], owner: str | None = None) -> Job:
        """Change parameters (``{role: {key: value}}``), rolled out by the app's update policy.

        Each value is checked against its parameter (it exists, is ``changeable``, fits its type
        and range) before anything changes; keys not given keep their values.
        """
        cluster = await self.get_cluster(cid, owner)
        if not isinstance(env, dict) or not env:
            raise InvalidRequest("env: expected an object of role: {key: value}")
        changes: dict[str, dict[str, str]] = {}
        previous: dict[str, dict[str, str]] = {}
        for role_name, values in env.items():
            try:
                role = cluster.app.role(role_name)
            except SpecError:
                raise InvalidRequest(f"env.{role_name}: the app has no role {role_name!r}") from None
            if not isinstance(values, dict):
                raise InvalidRequest(f"env.{role_name}: expected an object of key: value")
            current = dict(role.env_defaults(), **cluster.env.get(role_name, {}))
            for key, value in values.items():
                field = f"env.{role_name}.{key}"
                param = role.env.get(key)
                if param is None:
                    known = ", ".join(sorted(role.env)) or "none"
                    raise InvalidRequest(f"{field}: role {role_name} has no parameter {key!r} (has {known})")
                if not param.changeable:
                    raise InvalidRequest(f"{field}: is not changeable")
                secret = param.type == "password"
                try:
                    text = param.check(value)
                except ValueError as exc:
                    # A password's errors never quote it: they reach logs and other eyes.
                    raise InvalidRequest(f"{field}: {'not an allowed value' if secret else exc}") from None
                where = env_context(cid, role_name, key)
                now = current.get(key)
                if secret and now is not None:
                    now = self.sealer.open_text(now, where)
                if now != text:
                    changes.setdefault(role_name, {})[key] = self.sealer.seal(text, where) if secret else text
                    previous.setdefault(role_name, {})[key] = current.get(key, "")
        if not changes:
            raise InvalidRequest("env: every value given is already the current one")
        return await self._act(
            cluster, self._model(cid), "update_env", {"env": changes, "previous": previous}
        )

    async def recover(self, cid: str, owner: str | None = None, nodes: list[str] | None = None) -> Job:
        """Replace nodes (by default every node whose agent's heartbeat is gone) with new instances.

        Also the way out of a halted auto-recovery: an operator who has looked decides.
        """
        cluster = await self.get_cluster(cid, owner)
        members = {n.node_id: n for n in await self.nodes(cid)}
        if nodes is None:
            record = await self.metadata.get(cluster.owner, cluster.runtime)
            if record is None or record.status != "ready" or not record.ip:
                raise InvalidRequest(
                    "nodes: the cluster has no running metadata service to tell which nodes are silent; "
                    "name the nodes to replace"
                )
            try:
                status = await self.metadata.client(record).get_data(f"/_pitrix/status/{cid}") or {}
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise InvalidRequest(
                    f"nodes: the metadata service at {record.ip} cannot say which nodes are silent ({exc}); "
                    "name the nodes to replace"
                ) from None
            nodes = [
                n.node_id
                for n in members.values()
                if n.instance_id and "heartbeat" not in (status.get(n.instance_id) or {})
            ]
            if not nodes:
                raise InvalidRequest("nodes: every node's agent is reporting; nothing to recover")
        unknown = [n for n in nodes if n not in members or not members[n].instance_id]
        if unknown:
            raise InvalidRequest(f"nodes: cluster {cid} has no running node {', '.join(map(repr, unknown))}")
        old = {n: members[n].instance_id for n in sorted(set(nodes))}
        return await self._act(cluster, self._model(cid), "recover", {"nodes": old})

    async def delete_cluster(self, cid: str, owner: str | None = None) -> Job:
        """Delete the cluster; refused (``LifecycleError``, a 409) while others still link to it.

        A linking cluster would keep a link to nothing: its ``/self/links/<name>`` would go empty
        under its running app. Linking clusters being deleted (or gone) no longer count.
        """
        cluster = await self.get_cluster(cid, owner)
        return await self._act(cluster, self._model(cid), "delete", {}, check=self._refuse_if_linked)

    async def _refuse_if_linked(self, cluster: Cluster) -> None:
        """Run in ``_act`` after the cluster's fresh read: a linking create that lands after this
        check rewrites the cluster's record, so the delete's guard fails and it looks again."""
        linking = [
            f"{other.id} (links.{name})"
            for other in await self.list_clusters(cluster.owner)
            if other.state not in ("deleting", "deleted")
            for name, target in sorted(other.links.items())
            if target == cluster.id
        ]
        if linking:
            raise LifecycleError(
                f"cluster {cluster.id} is linked to by {', '.join(linking)}: delete those clusters first"
            )

    async def retry(self, cid: str, owner: str | None = None) -> Job:
        cluster = await self.get_cluster(cid, owner)
        if not cluster.job_id:
            raise LifecycleError("nothing to retry")
        job = await self.get_job(cid, cluster.job_id)
        return await self._act(
            cluster, self._model(cid), "retry", job.args, ACTION_STATE[job.action], job=job
        )

    def _model(self, cid: str) -> ClusterModel:
        model = self.models.get(cid)
        if model is None:
            raise NotFound(f"cluster {cid!r} does not exist")
        return model

    async def _act(
        self,
        cluster: Cluster,
        model: ClusterModel,
        action: str,
        args: dict[str, Any],
        *trigger_args: Any,
        job: Job | None = None,
        check: Callable[[Cluster], Awaitable[None]] | None = None,
        guards: Sequence[Compare] = (),
        writes: Sequence[Op] = (),
    ) -> Job:
        lock = self._locks.setdefault(cluster.id, asyncio.Lock())
        async with lock:
            read_at = 0
            if model.state != "pending":
                kv = await self.store.get(cluster_key(cluster.id))
                if kv is None:
                    raise NotFound(f"cluster {cluster.id!r} does not exist")
                cluster, read_at = self._load_cluster(kv.value), kv.mod_revision
                model = self._sync_model(cluster)
            if check is not None:
                await check(cluster)
            old, new = self.lifecycle.apply(model, action, *trigger_args)
            if job is None:
                job = Job(id=new_id("j"), cluster_id=cluster.id, action=action, args=args)
            else:  # a retry continues the failed job, so its journal skips what was done
                job = job.model_copy(update={"status": "running", "error": None, "finished": None})
            updated = cluster.model_copy(
                update={"state": new, "job_id": job.id, "last_error": None, "updated": time.time()}
            )
            # Another replica may have acted on the cluster since we read it: then nothing is written.
            guard = [
                Compare(cluster_key(cluster.id), "create", "==", 0)
                if action == "create"
                else Compare(cluster_key(cluster.id), "mod", "==", read_at),
                *guards,
            ]
            ops = [
                Op("put", cluster_key(cluster.id), updated.dump()),
                Op("put", job_key(cluster.id, job.id), job.dump()),
                *writes,
            ]
            if action == "create":  # owned from its first moment, so no other replica claims it first
                ops.append(Op("put", owner_key(cluster.id), self.replica.encode(), self.ownership.lease_id))
            try:
                written = await self.store.txn(guard, ops)
            except BaseException:
                self.lifecycle.revert(model, old)
                raise
            if not written.succeeded:
                self.lifecycle.revert(model, old)
                raise ChangedMeanwhile(
                    f"cluster {cluster.id} changed meanwhile (another replica acted); try again"
                )
        self.log.info("action accepted", cluster_id=cluster.id, action=action, job_id=job.id, state=new)
        monitor = self._monitors.pop(cluster.id, None)
        if monitor is not None and monitor is not asyncio.current_task():
            monitor.cancel()  # the job's own plan watches the agents now
        self._signals.changed(cluster.id)
        if await self.ownership.claim(cluster.id):
            self._supervise(cluster.id)
        else:
            self.log.info("action left to the owning replica", cluster_id=cluster.id, job_id=job.id)
        return job

    # -- supervision ------------------------------------------------------------------------------

    def _supervise(self, cid: str) -> None:
        running = self._tasks.get(cid)
        if running is not None and not running.done():
            return
        task = asyncio.create_task(self._run_job(cid), name=f"supervisor-{cid}")
        self._tasks[cid] = task
        task.add_done_callback(functools.partial(self._supervisor_ended, cid))

    def _supervisor_ended(self, cid: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(cid) is task:
            del self._tasks[cid]

    async def _run_job(self, cid: str) -> None:
        """Run ``cid``'s job once one of the replica's job slots is free (read the cluster then:
        a job waiting its turn may have been replaced by a newer one meanwhile).

        A job that has to wait says so in a step of its own, ``wait-slot``, ended when its turn
        comes: otherwise a queued job looks like one stuck at its first step, with no step at all.
        """
        if not self._job_slots.locked():
            async with self._job_slots:  # free: taken at once, nothing journaled
                await self._run_job_now(cid)
            return
        self.log.info("job waits for a slot", cluster_id=cid, running=self.max_jobs)
        waiting = await self._journal_wait(cid)
        began = time.monotonic()
        async with self._job_slots:
            if waiting is not None:
                journal, record = waiting
                waited = time.monotonic() - began
                detail = f"waited {waited:.1f}s for a job slot ({self.max_jobs} per replica)"
                # Only a display: the job runs regardless (a lost claim stops it at its first step).
                with contextlib.suppress(StoreError, LostOwnership):
                    await journal.finished(record, detail)
            await self._run_job_now(cid)

    async def _journal_wait(self, cid: str) -> tuple[Journal, StepRecord] | None:
        try:
            cluster = await self.get_cluster(cid)
            if cluster.state not in TRANSITIONAL or cluster.job_id is None:
                return None
            journal = Journal(self.store, cid, cluster.job_id, fence=self.ownership.fence(cid))
            return journal, await journal.started(WAIT_SLOT_STEP)
        except (StoreError, NotFound, LostOwnership) as exc:
            self.log.warning("queued job not journaled", cluster_id=cid, error=str(exc))
            return None

    async def _run_job_now(self, cid: str) -> None:
        cluster = await self.get_cluster(cid)
        if cluster.state not in TRANSITIONAL or cluster.job_id is None:
            # A late event asked for a job that has already ended: nothing to run.
            self._sync_model(cluster)
            return
        job = await self.get_job(cid, cluster.job_id)
        log = get_logger("pitrix.supervisor", cluster_id=cid, job_id=job.id, action=job.action)
        agents: AgentStatus | None = None
        began = time.monotonic()
        fence: list[Compare] = []
        try:
            # Every write of the job is fenced by the claim that started it (see ownership.py).
            fence = self.ownership.fence(cid)
            journal = Journal(self.store, cid, job.id, fence=fence)
            provider = await self.provider_for(cluster.runtime)

            async def ensure_metadata() -> str:
                record = await self.metadata.ensure(cluster.owner, cluster.runtime)
                return f"metadata service at {record.ip}"

            metadata_plan = Plan(job.action).then(Step("metadata", ensure_metadata))
            progress = functools.partial(self._progress, cid)
            await execute(metadata_plan, journal, progress, self.step_retry)
            record = await self.metadata.get(cluster.owner, cluster.runtime)
            assert record is not None
            client = self.metadata.client(record)
            agents = AgentStatus(client, cid)
            await agents.start()
            runtime = await self.get_runtime(cluster.runtime)
            # The plan publishes password values to the cluster's own nodes: it alone sees them opened.
            opened, opened_job = open_cluster(cluster, self.sealer), open_job(job, self.sealer)
            ops = ClusterOperations(
                self.store,
                opened,
                opened_job,
                provider,
                record,
                client,
                agents,
                sealer=self.sealer,
                keypairs=self.keypairs,
                heartbeat_interval=runtime.heartbeat_interval,
            )
            plan = self._plan(opened, opened_job, ops)
            log.info("plan", layers=plan.describe())
            await execute(plan, journal, progress, self.step_retry)
        except asyncio.CancelledError:
            log.info("supervision stopped; the job resumes at the next start")
            raise
        except LostOwnership as exc:
            log.warning("ownership lost; the job is left to the cluster's owner", error=str(exc))
        except StepFailed as exc:
            rolled_back = isinstance(exc.__cause__, RolledBack)
            log.error("job failed", error=str(exc), rolled_back=rolled_back)
            await self._finish(cid, job, fence, error=str(exc), rolled_back=rolled_back)
        except (ProviderError, LifecycleError, OSError) as exc:
            log.error("job failed", error=str(exc))
            await self._finish(cid, job, fence, error=str(exc))
        except Exception as exc:
            log.exception("job failed unexpectedly")
            await self._finish(cid, job, fence, error=f"internal error: {exc!r}")
        else:
            log.info("job done", seconds=round(time.monotonic() - began, 3))
            await self._finish(cid, job, fence)
        finally:
            if agents is not None:
                await agents.close()

    def _plan(self, cluster: Cluster, job: Job, ops: ClusterOperations) -> Plan:
        if job.action == "delete":

            async def release() -> str:
                others = [c for c in await self.list_clusters() if c.id != cluster.id]
                removed = await self.metadata.release(cluster.owner, cluster.runtime, others)
                return (
                    "metadata cluster removed" if removed else "metadata cluster kept (in use or by policy)"
                )

            return delete_plan(cluster, job, ops, Step("release-metadata", release))
        return BUILDERS[job.action](cluster, job, ops)

    async def _finish(
        self,
        cid: str,
        job: Job,
        fence: Sequence[Compare],
        error: str | None = None,
        rolled_back: bool = False,
    ) -> None:
        """Commit the job's end, only while this replica still holds the claim it ran the job under."""
        lock = self._locks.setdefault(cid, asyncio.Lock())
        async with lock:
            cluster = await self.get_cluster(cid)
            model = self._model(cid)
            if cluster.state not in TRANSITIONAL or cluster.job_id != job.id:
                # Another run of this job (or a newer job) already recorded its end.
                get_logger("pitrix.supervisor", cluster_id=cid, job_id=job.id).warning(
                    "job already ended", state=cluster.state, current_job=cluster.job_id
                )
                self._sync_model(cluster)
                return
            if model.state != cluster.state:
                self._sync_model(cluster)
            env = cluster.env
            halted = cluster.recovery_halted
            if error is None:
                self.lifecycle.apply(model, "finish")
                counts = dict(cluster.counts)
                if job.action in ("scale_out", "scale_in"):
                    counts[job.args["role"]] = int(job.args["to"])
                if job.action == "recover":
                    halted = None
                if job.action == "update_env":
                    env = {role: dict(env.get(role, {})) for role in env}
                    for role, values in job.args["env"].items():
                        env.setdefault(role, {}).update(values)
                job = job.model_copy(update={"status": "successful", "finished": time.time()})
            else:
                self.lifecycle.apply(model, "roll_back" if rolled_back else "fail")
                counts = cluster.counts
                job = job.model_copy(update={"status": "failed", "error": error, "finished": time.time()})
            updated = cluster.model_copy(
                update={
                    "state": model.state,
                    "counts": counts,
                    "env": env,
                    "recovery_halted": halted,
                    "last_error": error,
                    "updated": time.time(),
                }
            )
            committed = await self.store.txn(
                list(fence),
                [Op("put", cluster_key(cid), updated.dump()), Op("put", job_key(cid, job.id), job.dump())],
            )
            if not committed.succeeded:
                self._sync_model(cluster)  # back to the state etcd has: the new owner decides
                get_logger("pitrix.supervisor", cluster_id=cid, job_id=job.id).warning(
                    "ownership lost; the job's end is left to the replica that owns the cluster",
                    error=str(LostOwnership(cid, "commit refused")),
                )
                return
        if updated.state == "active":
            self._monitor(updated)
        elif updated.state == "deleted":
            await self.ownership.release(cid)
        self._signals.changed(cid)

    # -- recovery ---------------------------------------------------------------------------------

    def _monitor(self, cluster: Cluster) -> None:
        """Watch an active cluster's agents for dead nodes (unless recovery is off or halted)."""
        if not self.recovery.enabled or cluster.recovery_halted:
            return
        running = self._monitors.get(cluster.id)
        if running is not None and not running.done():
            return
        task = asyncio.create_task(self._watch_nodes(cluster), name=f"recovery-{cluster.id}")
        self._monitors[cluster.id] = task
        task.add_done_callback(functools.partial(self._monitor_ended, cluster.id))

    def _monitor_ended(self, cid: str, task: asyncio.Task[None]) -> None:
        if self._monitors.get(cid) is task:
            self._monitors.pop(cid, None)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("recovery monitor failed", cluster_id=cid, error=repr(task.exception()))

    async def _watch_nodes(self, cluster: Cluster) -> None:
        """Watch until nodes are dead, then replace them (or halt, if too many are).

        A watch that fails (metad restarting, a dropped connection, etcd unreachable for a moment)
        is resumed with a growing, jittered pause for as long as the cluster stays active and
        monitored: a monitor that quietly ended would leave the cluster unrecovered for good.
        """
        cid = cluster.id
        log = get_logger("pitrix.recovery", cluster_id=cid)
        backoff = Backoff(MONITOR_FIRST_PAUSE, MONITOR_MAX_PAUSE)
        while True:
            try:
                dead = await self._until_dead(cluster)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                wait = backoff.next()
                log.warning(
                    "recovery monitor interrupted; resuming",
                    error=str(exc) or type(exc).__name__,
                    retry_in=round(wait, 3),
                )
                await asyncio.sleep(wait)
                try:
                    cluster = await self.get_cluster(cid)
                except NotFound:
                    return
                except Exception as again:  # etcd still away: try again after the next pause
                    log.info("cluster unreadable; monitor waits", error=str(again))
                    continue
                if cluster.state != "active" or cluster.recovery_halted or not self.recovery.enabled:
                    log.info("recovery monitor ends", state=cluster.state)
                    return
        if dead is None:
            return
        total = len([n for n in await self.nodes(cid) if n.instance_id])
        names = ", ".join(n.node_id for n in dead)
        if self.recovery.meltdown(len(dead), total):
            reason = (
                f"auto-recovery halted: {len(dead)} of {total} nodes silent at once ({names}); "
                "this looks like a partition or a metadata outage, so nothing is replaced; "
                "run recover once the cause is known"
            )
            log.error("meltdown guard", dead=[n.node_id for n in dead], total=total)
            await self._halt_recovery(cid, reason)
            return
        log.warning("replacing dead nodes", nodes=[n.node_id for n in dead])
        try:
            await self.recover(cid, nodes=[n.node_id for n in dead])
        except (LifecycleError, InvalidRequest) as exc:  # another action got there first
            log.info("auto-recovery not started", reason=str(exc))

    async def _until_dead(self, cluster: Cluster) -> list[Node] | None:
        """The nodes found dead by one watch of the cluster's agents (None: no metadata cluster)."""
        record = await self.metadata.get(cluster.owner, cluster.runtime)
        if record is None:
            return None
        agents = AgentStatus(self.metadata.client(record), cluster.id)
        await agents.start()
        try:
            return await watch_for_dead_nodes(
                agents, lambda: self.nodes(cluster.id), self.recovery, cluster.id
            )
        finally:
            await agents.close()

    async def _halt_recovery(self, cid: str, reason: str) -> None:
        async with self._locks.setdefault(cid, asyncio.Lock()):
            cluster = await self.get_cluster(cid)
            updated = cluster.model_copy(update={"recovery_halted": reason, "updated": time.time()})
            await self.store.put(cluster_key(cid), updated.dump())
        self._signals.changed(cid)

    async def _progress(self, cid: str, record: StepRecord) -> None:
        self._signals.changed(cid)
