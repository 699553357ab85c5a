"""The runtime as the API and the daemon see it: a thin facade over its parts.

    repository.py   reads of clusters, nodes, jobs, runtimes (etcd is the one source of truth)
    actions/        one file per lifecycle action: states, typed arguments, checks, plan, commit
    jobs.py         accepting an action, running its plan, writing its end
    supervisor.py   one task per cluster, a bounded number of jobs at once
    monitor.py      the recovery monitor of active clusters
    ownership.py    which replica drives which cluster
    metadata_roster.py   each metadata cluster's members, published to its agents

``reconcile`` is the one place that decides what this replica does about a cluster: it is called
for every cluster at start, and again whenever a cluster's record or owner changes (from any
replica), so a job accepted anywhere is run by the cluster's owner and an abandoned one is adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pitrix.aio import cancel_and_wait
from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.providers.base import Provider, ProviderError
from pitrix.providers.registry import load_provider
from pitrix.runtime.actions import BY_NAME, BY_VERB, LIFECYCLE
from pitrix.runtime.actions.base import Action, InvalidRequest
from pitrix.runtime.actions.create import check_links, prepare
from pitrix.runtime.agents import AgentStatus, decoded
from pitrix.runtime.backup_service import BackupService
from pitrix.runtime.cloud_check import check_cloud
from pitrix.runtime.clouds import Clouds
from pitrix.runtime.executor import DEFAULT_RETRY
from pitrix.runtime.fleet import SWEEP_INTERVAL, Fleet
from pitrix.runtime.jobs import Jobs
from pitrix.runtime.journal import Journal
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.keys import METADATA_CLUSTERS, cluster_key, replica_key, runtime_key
from pitrix.runtime.lifecycle import ChangedMeanwhile, LifecycleError
from pitrix.runtime.metadata import MetadataClusters, StatusUnavailable
from pitrix.runtime.metadata_roster import MetadataRoster
from pitrix.runtime.monitor import RecoveryMonitor
from pitrix.runtime.node_commands import NodeCommand, NodeCommandFailed, result_view
from pitrix.runtime.ownership import LostOwnership, Ownership
from pitrix.runtime.records import Cluster, Job, Node, Runtime, StepRecord, new_id
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.repository import NotFound, Repository
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.signals import ClusterSignals
from pitrix.runtime.supervisor import DEFAULT_MAX_JOBS, Supervisor
from pitrix.runtime.tabs import first_live, run_on_node, run_tab
from pitrix.runtime.tabs import runners as tabs_runners
from pitrix.runtime.wording import describe
from pitrix.sealing import Sealer
from pitrix.store import Store, StoreError, StoreUnavailable
from pitrix.store.types import Compare, Op

__all__ = ["DEFAULT_MAX_JOBS", "WAIT_SLOT_STEP", "InvalidRequest", "NotFound", "RuntimeService"]

# A create whose link targets keep changing under it is refused after this many checks.
CREATE_ATTEMPTS = 5
# The step a job waiting for a free job slot shows.
WAIT_SLOT_STEP = "wait-slot"
# A job cut by etcd's unavailability (a member lost, a leader election) runs again after these.
STORE_RETRY_FIRST = 0.5
STORE_RETRY_MAX = 10.0


class RuntimeInUse(LifecycleError):
    """A runtime cannot go while clusters live on it (a 409 naming them)."""


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
        self.store = store
        self.sealer = sealer  # secrets in the records are sealed with it (pitrix.sealing)
        self.replica = replica or new_id("replica")
        self.repo = Repository(store, sealer)
        self.clouds = Clouds(self.repo)
        self.keypairs = KeyPairs(store, sealer)  # one per service: each pair read and imported once
        retry = retry or DEFAULT_RETRY  # the metadata cluster's plan retries as a cluster's does
        self.metadata = MetadataClusters(
            store,
            self.provider_for,
            sealer=sealer,
            tls=metadata_tls,
            keypairs=self.keypairs,
            retry=retry,
        )
        # The live replicas share the clusters (pitrix.runtime.fleet): this replica's view of them,
        # the address its admin API answers on (told by the daemon), and the claims it moved.
        self.fleet = Fleet(store, self.replica)
        self.address = ""
        self.claim_moves = 0
        self._lease_started = 0.0
        self._sweeper: asyncio.Task[None] | None = None
        self.ownership = Ownership(
            store, self.replica, owner_ttl, self.reconcile, self._let_go, announce=self._announce
        )
        self.signals = ClusterSignals()
        self.jobs = Jobs(
            store,
            self.repo,
            self.ownership,
            self.metadata,
            self.clouds,
            sealer=sealer,
            keypairs=self.keypairs,
            signals=self.signals,
            retry=retry,
        )
        self.supervisor = Supervisor(self._run, max_jobs, self._queued)
        self.monitor = RecoveryMonitor(
            self.repo, self.metadata, recovery or RecoveryPolicy(), self._auto_recover, self._halt_recovery
        )
        self.log = get_logger("pitrix.runtime")
        self.backups = BackupService(self)  # backup: records, restores, the schedule
        self._tab_locks: dict[str, asyncio.Lock] = {}  # display tabs: one at a time per cluster
        # Each metadata cluster's members, published to its agents (pitrix.runtime.metadata_roster).
        self.roster = MetadataRoster(store, self.metadata)

    # -- life of the service ----------------------------------------------------------------------

    async def start(self) -> None:
        """Claim every cluster nobody owns (or this replica owned before), resume their jobs.

        From then on, clusters whose owner key disappears (a dead replica's lease ran out) or whose
        record changes are reconciled again, so another replica's clusters are adopted and resumed.
        """
        await self.ownership.start()
        await self.fleet.load()
        clusters, revision = await self.repo.clusters_at()
        for cluster in clusters:
            holder = self.fleet.owners.get(cluster.id)
            if holder is not None and holder != self.replica and holder in self.fleet.replicas:
                # A live replica drives it: nothing to read here (a replica joining a fleet of
                # hundreds of clusters was not ready within minutes on a loaded etcd). If that
                # replica goes, its owner keys' deletion (or the sweep) brings the cluster here.
                continue
            await self.reconcile(cluster.id)
        self.ownership.follow(revision + 1)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="fleet-sweep")
        await self.roster.start()
        self.log.info(
            "runtime started", clusters=len(clusters), resumed=self.supervisor.running(), replica=self.replica
        )

    async def stop(self) -> None:
        """Stop supervising (jobs stay journaled and resume at the next start)."""
        if self._sweeper is not None:
            await cancel_and_wait(self._sweeper)
            self._sweeper = None
        await self.roster.stop()
        await self._let_go()
        await self.fleet.close()
        await self.ownership.close()  # only then may other replicas adopt our clusters
        await self.metadata.close()
        await self.clouds.close()

    async def _let_go(self) -> None:
        """Stop every job and monitor here (they resume wherever the clusters are claimed next)."""
        await asyncio.gather(self.supervisor.stop(), self.monitor.stop(), self.backups.stop())

    async def reconcile(self, cid: str, *, dealt: bool = False) -> None:
        """Drive ``cid`` here if this replica owns it (claiming it when nobody does and the fleet
        deals it here, or ``dealt`` says a sweep just did), else let go."""
        self.signals.changed(cid)  # waiters here learn of changes made by other replicas too
        if self.supervisor.busy(cid):
            return  # our own job is running it; its end decides what follows
        try:
            cluster = await self.repo.cluster(cid)  # read after the check: a job ending now is seen
        except NotFound:
            return
        if cluster.state == "deleted":
            self.backups.forget(cid)
            await self.ownership.release(cid)
            return
        if not (dealt or self.fleet.should_claim(cid)) or not await self._claim(cid):
            self.monitor.forget(cid)
            self.backups.forget(cid)
            return
        self.backups.follow(cid)  # backup: this replica runs the cluster's backup schedule
        if LIFECYCLE.is_transitional(cluster.state) and cluster.job_id:
            self.monitor.forget(cid)
            self.supervisor.supervise(cid)
        elif cluster.state == "active":
            self.monitor.watch(cluster)

    async def _run(self, cid: str) -> None:
        backoff = Backoff(STORE_RETRY_FIRST, STORE_RETRY_MAX)
        while True:
            try:
                ended = await self.jobs.run(cid)
                break
            except StoreUnavailable as exc:
                # A write whose answer was lost may have landed or not: the job is run again from
                # its journal (steps are idempotent; a landed end is seen as ended), as after a crash.
                delay = backoff.next()
                self.log.warning(
                    "etcd unavailable during a job; it resumes from its journal",
                    cluster_id=cid,
                    error=str(exc),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
            finally:
                self.fleet.changed.set()  # between jobs: the moment a cluster may move to another replica
        if ended is None:
            return
        if ended.cluster.state == "active":
            self.monitor.watch(ended.cluster)
        elif ended.cluster.state == "deleted":
            await self.ownership.release(cid)

    async def _queued(self, cid: str) -> Callable[[float], Awaitable[None]] | None:
        """A job waiting for a slot shows it in a step of its own, ended when its turn comes:
        otherwise a queued job looks like one stuck at its first step."""
        try:
            cluster = await self.repo.cluster(cid)
            if not LIFECYCLE.is_transitional(cluster.state) or cluster.job_id is None:
                return None
            journal = Journal(self.store, cid, cluster.job_id, fence=self.ownership.fence(cid))
            record = await journal.started(WAIT_SLOT_STEP)
        except (StoreError, NotFound, LostOwnership) as exc:
            self.log.warning("queued job not journaled", cluster_id=cid, error=str(exc))
            return None

        async def taken(waited: float) -> None:
            detail = f"waited {waited:.1f}s for a job slot ({self.supervisor.max_jobs} per replica)"
            with contextlib.suppress(StoreError, LostOwnership):  # a display only: the job runs regardless
                await journal.finished(record, detail)

        return taken

    async def _accepted(self, job: Job) -> Job:
        """Run an accepted job here if this replica owns its cluster; its owner runs it otherwise."""
        self.monitor.forget(job.cluster_id)  # the job's own plan watches the agents now
        if self.fleet.should_claim(job.cluster_id) and await self._claim(job.cluster_id):
            self.supervisor.supervise(job.cluster_id)
        else:
            self.log.info("action left to the owning replica", cluster_id=job.cluster_id, job_id=job.id)
        return job

    # -- sharing clusters with the other replicas (pitrix.runtime.fleet) ----------------------------

    async def _claim(self, cid: str) -> bool:
        # Taken before the claim (its own echo on the fleet's watch clears the mark, and a second
        # claim of the same cluster running alongside must not count it again).
        adopting = cid not in self.fleet.owners and self.fleet.take_released(cid)
        if not await self.ownership.claim(cid):
            return False
        self.fleet.held(cid)
        if adopting:
            self.claim_moves += 1
        return True

    async def _announce(self, lease: int) -> None:
        """Put this replica in the fleet, on the lease its claims hang on (a new lease: again)."""
        self._lease_started = time.time()
        await self._publish(lease)

    async def _publish(self, lease: int) -> None:
        info = self.fleet.info(lease, self.address, self._lease_started)
        await self.store.put(replica_key(self.replica), info.dump(), lease)

    async def advertise(self, address: str) -> None:
        """Tell the other replicas (and ``pitrix replicas``) where this replica's admin API answers."""
        self.address = address
        await self._publish(self.ownership.lease_id)

    async def _sweep_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_INTERVAL):
                    await self.fleet.changed.wait()
            self.fleet.changed.clear()
            try:
                await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("fleet sweep failed")

    async def _sweep(self) -> None:
        """Claim the orphans the fleet deals here; hand idle clusters beyond the fair share over."""
        for cid, replica in list(self.fleet.dealt().items()):
            if replica == self.replica and not self.ownership.holds(cid) and self.fleet.below_share():
                await self.reconcile(cid, dealt=True)
        # Clusters the fleet says are ours but nothing here drives: a claim whose answer was lost
        # (etcd lost a member then), or a job whose task ended without ending the job.
        for cid in self.fleet.mine():
            if self.supervisor.busy(cid):
                continue
            if not self.ownership.holds(cid) or LIFECYCLE.is_transitional(self.fleet.states.get(cid, "")):
                await self.reconcile(cid)
        surplus = self.fleet.surplus()
        for cid in self.fleet.handover_order():
            if surplus <= 0:
                break
            if await self._hand_over(cid):
                surplus -= 1

    async def _hand_over(self, cid: str) -> bool:
        """Let an idle cluster go (never one whose job runs or waits), for the least loaded replica."""
        if self.supervisor.busy(cid):
            return False
        kv = await self.store.get(cluster_key(cid))
        if kv is None:
            return False
        try:
            state = json.loads(kv.value).get("state", "")
        except (ValueError, AttributeError):
            return False
        if LIFECYCLE.is_transitional(state) or self.supervisor.busy(cid):
            return False
        if not await self.ownership.hand_over(cid, [Compare(cluster_key(cid), "mod", "==", kv.mod_revision)]):
            return False
        self.fleet.let_go(cid)
        self.monitor.forget(cid)
        self.backups.forget(cid)
        self.claim_moves += 1
        return True

    def records_events(self, cid: str) -> bool:
        """Whether this replica keeps ``cid``'s event history: it owns the cluster, or it is the
        only replica (the owner of a cluster nobody owns at this moment records what it missed
        once it claims it; pitrix.api.events)."""
        owner = self.fleet.owners.get(cid)
        if owner is not None:
            return owner == self.replica
        return len(self.fleet.live()) == 1

    def replica_view(self) -> list[dict[str, Any]]:
        """Every live replica as this one sees it: id, address, clusters held, jobs, lease age."""
        now = time.time()
        counts, busy = self.fleet.counts(), self.fleet.busy()
        rows = []
        for rid in self.fleet.live():
            info = self.fleet.replicas.get(rid)
            started = info.started if info is not None else self._lease_started
            rows.append(
                {
                    "id": rid,
                    "address": info.address if info is not None else self.address,
                    "clusters_owned": counts.get(rid, 0),
                    "jobs_running": busy.get(rid, 0),
                    "lease_age": round(max(0.0, now - started), 1) if started else 0.0,
                    "self": rid == self.replica,
                }
            )
        return rows

    # -- runtimes ---------------------------------------------------------------------------------

    async def put_runtime(self, data: dict[str, Any], *, check: bool = False) -> Runtime:
        """Save a runtime; with ``check``, only once its cloud answered a read-only call with it."""
        from pydantic import ValidationError

        try:
            runtime = Runtime.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest(describe(exc.errors()[0], Runtime)) from None
        try:
            provider = load_provider(runtime.provider, runtime.model_dump())
        except ProviderError as exc:
            raise InvalidRequest(str(exc)) from None
        try:
            if check:
                await check_cloud(runtime, provider)
            await self._refuse_moving_metadata(runtime)
        except BaseException:
            await provider.close()
            raise
        await self.repo.save_runtime(runtime)
        await self.clouds.replace(runtime, provider)
        return runtime

    async def _refuse_moving_metadata(self, runtime: Runtime) -> None:
        """A new placement would send the runtime's clusters to metadata clusters their agents do
        not know: it may change only while no cluster lives on the runtime."""
        current = await self.repo.runtime_or_none(runtime.name)
        if current is None or current.placement == runtime.placement:
            return
        living = [c.id for c in await self.repo.clusters() if c.runtime == runtime.name]
        if living:
            raise InvalidRequest(
                f"placement: cannot change while runtime {runtime.name!r} has clusters "
                f"({', '.join(living[:5])}{', ...' if len(living) > 5 else ''}); delete them first"
            )

    async def get_runtime(self, name: str) -> Runtime:
        return await self.repo.runtime(name)

    async def update_runtime(self, name: str, changes: dict[str, Any], *, check: bool = False) -> Runtime:
        """Change some of a runtime's settings, keeping the others (credentials included); its
        clusters' next cloud calls use the new ones (a cluster stuck on wrong credentials can then
        be retried or deleted)."""
        current = await self.repo.runtime(name)
        if changes.get("name", name) != name:
            raise InvalidRequest("name: a runtime cannot be renamed; add a new one")
        return await self.put_runtime({**current.model_dump(), **changes, "name": name}, check=check)

    async def delete_runtime(self, name: str) -> None:
        """Forget a runtime no cluster and no metadata cluster lives on (409 naming them otherwise)."""
        await self.repo.runtime(name)
        using = sorted(c.id for c in await self.repo.clusters() if c.runtime == name)
        if using:
            raise RuntimeInUse(
                f"runtime {name!r} is used by clusters {', '.join(using[:10])}"
                f"{', ...' if len(using) > 10 else ''}; delete them first"
            )
        kvs, _ = await self.store.get_prefix(METADATA_CLUSTERS)
        holders = sorted(
            kv.key.removeprefix(METADATA_CLUSTERS).rsplit("/", 1)[0]
            for kv in kvs
            if kv.key.rsplit("/", 1)[-1] == name
        )
        if holders:
            raise RuntimeInUse(
                f"runtime {name!r} still runs metadata clusters (for {', '.join(holders)}); they go "
                "with their last cluster unless the runtime's metadata_retention is keep"
            )
        await self.store.delete(runtime_key(name))
        await self.clouds.forget(name)

    async def list_runtimes(self) -> list[Runtime]:
        return await self.repo.runtimes()

    async def provider_for(self, name: str) -> Provider:
        return await self.clouds.provider(name)

    # -- reading ----------------------------------------------------------------------------------

    async def get_cluster(self, cid: str, owner: str | None = None) -> Cluster:
        return await self.repo.cluster(cid, owner)

    async def list_clusters(self, owner: str | None = None, include_deleted: bool = False) -> list[Cluster]:
        return await self.repo.clusters(owner, include_deleted)

    async def nodes(self, cid: str) -> list[Node]:
        return await self.repo.nodes(cid)

    async def get_job(self, cid: str, job_id: str) -> Job:
        return await self.repo.job(cid, job_id)

    async def list_jobs(self, cid: str) -> list[Job]:
        return await self.repo.jobs(cid)

    async def job_steps(self, cid: str, job_id: str) -> list[StepRecord]:
        return await self.repo.steps(cid, job_id)

    async def ready(self) -> None:
        """Whether the store answers (the readiness probe)."""
        await self.store.revision()

    async def agent_reports(self, cluster: Cluster) -> dict[str, dict[str, Any]] | None:
        """What each node's agent last reported through metad, by instance id (heartbeat, health,
        applied revision and results); None when the metadata service cannot be asked right now."""
        try:
            tree = await self.metadata.status(cluster.owner, cluster.runtime, cluster.id)
        except StatusUnavailable:
            return None
        return {
            iid: {key: decoded(value) for key, value in entries.items()}
            for iid, entries in tree.items()
            if isinstance(entries, dict)
        }

    async def wait(
        self,
        cid: str,
        until: Callable[[Cluster], Awaitable[bool]],
        timeout: float,
        *,
        steps: bool = True,
    ) -> Cluster:
        """Until ``await until(cluster)`` holds, checked again on every change (TimeoutError).
        ``steps=False``: ``until`` looks at the cluster's record only, so a change of its job's
        steps alone does not wake it (see ``signals``)."""
        async with asyncio.timeout(timeout), self.signals.listening(cid, steps=steps) as changed:
            while True:
                changed.clear()
                cluster = await self.repo.cluster(cid)
                if await until(cluster):
                    return cluster
                await changed.wait()

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
        env: dict[str, Any] | None = None,
        restored_from: str = "",
    ) -> tuple[Cluster, Job]:
        desk = self.jobs.desk
        cluster, targets = await prepare(
            desk,
            owner=owner,
            runtime=runtime,
            app=app,
            name=name,
            counts=counts or {},
            links=links or {},
            channel=channel,
            env=env,
        )
        if restored_from:  # backup: a restore's create (steps/restore.py makes its volumes)
            cluster = cluster.model_copy(update={"restored_from": restored_from})
        # Each link target is rewritten as read, in the create's transaction: the create fails if
        # a target changed since it was checked (another replica began deleting it), and a delete
        # that read a target before this create landed fails its own guard and looks again.
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            if attempt > 1:
                _, targets = await check_links(desk, owner, runtime, cluster.links)
            guards = [Compare(cluster_key(kv.key), "mod", "==", kv.mod_revision) for kv in targets]
            touches = [Op("put", cluster_key(kv.key), kv.value) for kv in targets]
            placed = self.fleet.place(cluster.id, await self.ownership.current_lease())
            try:
                try:
                    job = await self.jobs.create(cluster, guards, touches, placed)
                except StoreError:
                    if placed[0] == self.replica:
                        raise
                    # The chosen replica's lease ended since it announced it: this one owns it.
                    placed = (self.replica, await self.ownership.current_lease())
                    job = await self.jobs.create(cluster, guards, touches, placed)
                self.fleet.placed(cluster.id, placed[0])
            except ChangedMeanwhile:
                # The id is new, so a target changed: its own job moved on (a busy cluster's
                # record is written often) or a delete began. Check the links again rather than
                # refuse a create that may be fine; a target being deleted is refused by name.
                if not targets or attempt == CREATE_ATTEMPTS:
                    raise
                continue
            await self._accepted(job)
            return await self.repo.cluster(cluster.id), job
        raise AssertionError("unreachable")

    async def act(self, cid: str, verb: str, body: dict[str, Any], owner: str | None = None) -> Job:
        """``POST /v1/clusters/<cid>/<verb>``: the verb's action judges ``body`` and is accepted."""
        action = BY_VERB.get(verb)
        if action is None:
            raise LifecycleError(f"unknown action {verb!r}")
        return await self._request(cid, action, body, owner)

    async def _request(self, cid: str, action: Action[Any], body: dict[str, Any], owner: str | None) -> Job:
        return await self._accepted(await self.jobs.request(cid, owner, action, body))

    async def upgrade_preview(
        self, cid: str, body: dict[str, Any], owner: str | None = None
    ) -> dict[str, Any]:
        """``GET /v1/clusters/<cid>/upgrade?version=V``: what an upgrade would change, nothing started."""
        from pitrix.runtime.actions.upgrade import Upgrade

        cluster, _ = await self.repo.read_cluster(cid, owner)
        action = BY_NAME["upgrade"]
        assert isinstance(action, Upgrade)
        return await action.preview(self.jobs.desk, cluster, body)

    async def scale(self, cid: str, role: str, count: int, owner: str | None = None) -> Job:
        return await self.act(cid, "scale", {"role": role, "count": count}, owner)

    async def stop_cluster(self, cid: str, owner: str | None = None) -> Job:
        """Stop services (reverse role order) and instances; the cluster keeps its nodes."""
        return await self.act(cid, "stop", {}, owner)

    async def start_cluster(self, cid: str, owner: str | None = None) -> Job:
        return await self.act(cid, "start", {}, owner)

    async def update_env(self, cid: str, env: dict[str, Any], owner: str | None = None) -> Job:
        """Change parameters (``{role: {key: value}}``), rolled out by the app's update policy."""
        return await self.act(cid, "env", {"env": env}, owner)

    async def recover(self, cid: str, owner: str | None = None, nodes: list[str] | None = None) -> Job:
        """Replace nodes (by default every node whose agent's heartbeat is gone) with new instances."""
        return await self.act(cid, "recover", {"nodes": nodes} if nodes else {}, owner)

    async def delete_cluster(
        self, cid: str, owner: str | None = None, body: dict[str, Any] | None = None
    ) -> Job:
        """Delete the cluster (``body``: ``{"force": true}`` goes on past failing stop/destroy
        services); refused (``LifecycleError``, a 409) while others still link to it."""
        return await self._request(cid, BY_NAME["delete"], body or {}, owner)

    async def retry(self, cid: str, owner: str | None = None) -> Job:
        return await self._accepted(await self.jobs.retry_failed(cid, owner))

    # -- recovery ---------------------------------------------------------------------------------

    async def _auto_recover(self, cid: str, nodes: list[str]) -> None:
        try:
            await self.recover(cid, nodes=nodes)
        except (LifecycleError, InvalidRequest) as exc:  # another action got there first
            self.log.info("auto-recovery not started", cluster_id=cid, reason=str(exc))

    async def _halt_recovery(self, cid: str, reason: str) -> None:
        await self.jobs.update_record(cid, lambda _: {"recovery_halted": reason})

    # -- display tabs (pitrix/runtime/tabs.py) ----------------------------------------------------

    async def display_tab(self, cid: str, name: str, owner: str | None = None) -> dict[str, Any]:
        """Run the app's display tab ``name`` on one live node of the cluster: ``{labels, data}``.

        NotFound when the app has no such tab, LifecycleError unless the cluster is ``active``
        (a job's commands use the nodes' one command slot), ``tabs.TabFailed`` when the command
        fails or prints no table.
        """
        cluster = await self.get_cluster(cid, owner)
        tabs = cluster.app.display_tabs
        if name not in tabs:
            known = ", ".join(sorted(tabs)) or "none"
            raise NotFound(f"tab: cluster {cid} has no display tab {name!r} (has {known})")
        if cluster.state != "active":
            raise LifecycleError(f"tab: cluster {cid} is {cluster.state}; tabs are shown while it is active")
        record = await self.metadata.get(cluster.owner, cluster.runtime)
        if record is None or record.status != "ready":
            raise LifecycleError(f"tab: cluster {cid} has no running metadata service")
        candidates = tabs_runners(cluster, name, await self.nodes(cid))
        client = self.metadata.client(record)
        async with self._tab_locks.setdefault(cid, asyncio.Lock()):
            agents = AgentStatus(client, cid)
            await agents.start()
            try:
                return await run_tab(client, agents, cluster, name, candidates)
            finally:
                await agents.close()

    # -- looking at a node (pitrix/runtime/node_commands.py) --------------------------------------

    async def active_node(
        self, cid: str, node_id: str, owner: str | None, doing: str
    ) -> tuple[Cluster, Node]:
        """The cluster and its node ``node_id`` for a look at the node (logs, exec, a shell): only
        while the cluster is ``active`` and the node has an instance. NotFound for others' clusters
        and unknown nodes (naming the known ones); LifecycleError saying when ``doing`` can be done.
        Reads pitrixd's records only."""
        cluster = await self.get_cluster(cid, owner)
        nodes = await self.nodes(cid)
        node = next((n for n in nodes if n.node_id == node_id), None)
        if node is None:
            known = ", ".join(sorted(n.node_id for n in nodes)) or "none"
            raise NotFound(f"node: cluster {cid} has no node {node_id!r} (has {known})")
        if cluster.state != "active":
            raise LifecycleError(f"node: cluster {cid} is {cluster.state}; {doing} while it is active")
        if not node.instance_id:
            raise LifecycleError(f"node: {node_id} of cluster {cid} has no instance yet")
        return cluster, node

    async def node_command(
        self, cid: str, node_id: str, command: NodeCommand, owner: str | None = None
    ) -> dict[str, Any]:
        """Run ``command`` (a log tail, an exec) on node ``node_id`` now: its exit code and output tails.

        As a display tab: only while the cluster is ``active`` (LifecycleError otherwise: a job's
        commands use the nodes' one command slot), one such command at a time per cluster (the tab
        lock), the node's agent reporting; ``NodeCommandFailed`` when no result comes in time.
        """
        cluster, node = await self.active_node(cid, node_id, owner, "commands run on its nodes")
        record = await self.metadata.get(cluster.owner, cluster.runtime)
        if record is None or record.status != "ready":
            raise LifecycleError(f"node: cluster {cid} has no running metadata service")
        client = self.metadata.client(record)
        if await first_live(client, cid, [node]) is None:
            raise LifecycleError(f"node: the agent of {node_id} ({node.instance_id}) is not reporting")
        async with self._tab_locks.setdefault(cid, asyncio.Lock()):
            agents = AgentStatus(client, cid)
            await agents.start()
            try:
                result = await run_on_node(
                    client, agents, cid, node, command.command_id(), command.cmd, command.timeout
                )
            except TimeoutError:
                raise NodeCommandFailed(
                    f"node: no result from {node_id} within {command.timeout:g}s (is its agent busy?)"
                ) from None
            finally:
                await agents.close()
        return result_view(node_id, command, result)
