"""A job's whole story: accepted in one write, run as its action's plan, ended in one write.

``accept`` reads the cluster once, lets the action judge the request on that read, asks the
lifecycle where it leads, and writes the new state and the job in one transaction guarded by the
revision it read: a replica that acted meanwhile makes it fail cleanly (``ChangedMeanwhile``),
never half-apply. ``run`` is what the supervisor runs for a cluster in a transitional state:
the metadata step, the action's plan, then ``finish``, which writes the job's end and what the
action commits to the record, again in one guarded transaction.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pitrix.logs import get_logger
from pitrix.providers.base import ProviderError
from pitrix.runtime import passphraseless
from pitrix.runtime.actions import BY_NAME, LIFECYCLE
from pitrix.runtime.actions.base import Action, Desk
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.clouds import Clouds
from pitrix.runtime.executor import StepFailed, execute
from pitrix.runtime.journal import Journal
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.keys import cluster_key, job_key, owner_key
from pitrix.runtime.lifecycle import ChangedMeanwhile, LifecycleError
from pitrix.runtime.metadata import MetadataClusters
from pitrix.runtime.ownership import LostOwnership, Ownership
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.records import Cluster, Job, StepRecord, new_id
from pitrix.runtime.repository import Repository
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.secret_env import open_cluster, open_job
from pitrix.runtime.signals import ClusterSignals
from pitrix.runtime.steps import operation_keys
from pitrix.runtime.steps.context import JobContext, RolledBack
from pitrix.sealing import Sealer
from pitrix.store import Store, StoreUnavailable
from pitrix.store.types import Compare, Op

# A job's end is written guarded by the cluster's revision; a write that lands in between (the
# recovery monitor's halt, a linking create touching the record) makes it read and try again.
FINISH_ATTEMPTS = 10


@dataclass(frozen=True)
class Ended:
    """How a job left its cluster."""

    cluster: Cluster
    job: Job


class Jobs:
    def __init__(
        self,
        store: Store,
        repo: Repository,
        ownership: Ownership,
        metadata: MetadataClusters,
        clouds: Clouds,
        *,
        sealer: Sealer,
        keypairs: KeyPairs,
        signals: ClusterSignals,
        retry: RetryPolicy,
    ) -> None:
        self.store = store
        self.repo = repo
        self.ownership = ownership
        self.metadata = metadata
        self.clouds = clouds
        self.sealer = sealer
        self.keypairs = keypairs
        self.signals = signals
        self.retry = retry
        self.desk = Desk(repo, metadata, sealer)
        self._locks: dict[str, asyncio.Lock] = {}
        self.log = get_logger("pitrix.jobs")

    def lock(self, cid: str) -> asyncio.Lock:
        """One writer of a cluster's record at a time in this replica (others are fenced by revision)."""
        return self._locks.setdefault(cid, asyncio.Lock())

    # -- accepting --------------------------------------------------------------------------------

    async def create(
        self,
        cluster: Cluster,
        guards: Sequence[Compare] = (),
        writes: Sequence[Op] = (),
        placed: tuple[str, int] | None = None,
    ) -> Job:
        """Accept the create of a new (pending) cluster, owned from its first moment: by this
        replica, or by the one ``placed`` names (its id and lease, pitrix.runtime.fleet)."""
        create = BY_NAME["create"]
        state = LIFECYCLE.next_state(cluster.state, create.name)
        job = Job(id=new_id("j"), cluster_id=cluster.id, action=create.name, args={})
        replica, lease = placed or (self.ownership.replica, self.ownership.lease_id)
        owner = Op("put", owner_key(cluster.id), replica.encode(), lease)
        async with self.lock(cluster.id):
            await self._write(cluster, 0, state, job, [*guards], [*writes, owner])
        return job

    async def request(self, cid: str, owner: str | None, action: Action[Any], body: dict[str, Any]) -> Job:
        """Judge ``body`` as a request for ``action`` on the cluster as read now, and accept it."""
        async with self.lock(cid):
            cluster, read_at = await self.repo.read_cluster(cid, owner)
            accepted = await action.accept(self.desk, cluster, body)
            chosen = accepted.action
            state = LIFECYCLE.next_state(cluster.state, chosen.name)
            await chosen.recheck(self.desk, cluster)
            job = Job(id=new_id("j"), cluster_id=cid, action=chosen.name, args=accepted.args.stored())
            await self._write(cluster, read_at, state, job)
        return job

    async def retry_failed(self, cid: str, owner: str | None) -> Job:
        """A failed cluster's job runs again; its journal skips the steps it had done."""
        async with self.lock(cid):
            cluster, read_at = await self.repo.read_cluster(cid, owner)
            if not cluster.job_id:
                raise LifecycleError("nothing to retry")
            job = await self.repo.job(cid, cluster.job_id)
            state = LIFECYCLE.retry_state(cluster.state, job.action)
            job = job.model_copy(update={"status": "running", "error": None, "finished": None})
            await self._write(cluster, read_at, state, job)
        return job

    async def _write(
        self,
        cluster: Cluster,
        read_at: int,
        state: str,
        job: Job,
        guards: Sequence[Compare] = (),
        writes: Sequence[Op] = (),
    ) -> None:
        updated = cluster.model_copy(
            update={"state": state, "job_id": job.id, "last_error": None, "updated": time.time()}
        )
        # Another replica may have acted on the cluster since it was read: then nothing is written.
        guard = Compare(cluster_key(cluster.id), "create" if read_at == 0 else "mod", "==", read_at)
        ops = [
            Op("put", cluster_key(cluster.id), updated.dump()),
            Op("put", job_key(cluster.id, job.id), job.dump()),
        ]
        written = await self.store.txn([guard, *guards], [*ops, *writes])
        if not written.succeeded:
            raise ChangedMeanwhile(
                f"cluster {cluster.id} changed meanwhile (another replica acted); try again"
            )
        self.log.info("action accepted", cluster_id=cluster.id, action=job.action, job_id=job.id, state=state)
        self.signals.changed(cluster.id)

    # -- running ----------------------------------------------------------------------------------

    async def run(self, cid: str) -> Ended | None:
        """Run ``cid``'s current job to its end (None: it has no job to run, or it ended already)."""
        cluster = await self.repo.cluster(cid)
        if not LIFECYCLE.is_transitional(cluster.state) or cluster.job_id is None:
            return None  # a late wake-up for a job that has ended
        job = await self.repo.job(cid, cluster.job_id)
        action = BY_NAME[job.action]
        log = get_logger("pitrix.supervisor", cluster_id=cid, job_id=job.id, action=job.action)
        progress = functools.partial(self._progress, cid)
        agents: AgentStatus | None = None
        began = time.monotonic()
        fence: list[Compare] = []
        ctx: JobContext | None = None
        try:
            # Every write of the job is fenced by the claim that started it (see ownership.py).
            fence = self.ownership.fence(cid)
            journal = Journal(self.store, cid, job.id, fence=fence)
            provider = await self.clouds.provider(cluster.runtime)

            async def ensure_metadata() -> str:
                record = await self.metadata.ensure(cluster.owner, cluster.runtime)
                return (
                    f"metadata service at {record.ip} (made by job {record.job_id})"
                    if record.job_id
                    else f"metadata service at {record.ip}"
                )

            await execute(
                Plan(job.action).then(Step("metadata", ensure_metadata)), journal, progress, self.retry
            )
            record = await self.metadata.get(cluster.owner, cluster.runtime)
            assert record is not None
            client = self.metadata.client(record)
            agents = AgentStatus(client, cid)
            await agents.start()
            runtime = await self.repo.runtime(cluster.runtime)
            # The plan publishes password values to the cluster's own nodes: it alone sees them opened.
            opened_job = open_job(job, self.sealer)
            ctx = JobContext(
                store=self.store,
                cluster=open_cluster(cluster, self.sealer),
                job=opened_job,
                provider=provider,
                metadata=record,
                metad=client,
                agents=agents,
                sealer=self.sealer,
                keypairs=self.keypairs,
                heartbeat_interval=runtime.heartbeat_interval,
                fleet=self.metadata,
                fence=fence,
                node_ids=[n.node_id for n in await self.repo.nodes(cid)],
                runtime=runtime,
            )
            await passphraseless.load(ctx)
            plan = action.plan(ctx, action.decode(opened_job.args))
            log.info("plan", layers=plan.describe())
            await execute(plan, journal, progress, self.retry)
        except asyncio.CancelledError:
            log.info("supervision stopped; the job resumes at the next start")
            raise
        except LostOwnership as exc:
            log.warning("ownership lost; the job is left to the cluster's owner", error=str(exc))
            return None
        except StoreUnavailable:
            raise  # etcd lost mid-job (a member died): no failure of the job, which resumes later
        except StepFailed as exc:
            rolled_back = isinstance(exc.__cause__, RolledBack) or action.always_rolls_back
            log.error("job failed", error=str(exc), rolled_back=rolled_back)
            await _clear_operation_keys(ctx, job)
            return await self.finish(cid, job, fence, error=str(exc), rolled_back=rolled_back)
        except (ProviderError, LifecycleError, OSError) as exc:
            log.error("job failed", error=str(exc))
            await _clear_operation_keys(ctx, job)
            return await self.finish(cid, job, fence, error=str(exc), rolled_back=action.always_rolls_back)
        except Exception as exc:
            log.exception("job failed unexpectedly")
            error = f"internal error: {exc!r}"
            return await self.finish(cid, job, fence, error=error, rolled_back=action.always_rolls_back)
        finally:
            if agents is not None:
                await agents.close()
        log.info("job done", seconds=round(time.monotonic() - began, 3))
        return await self.finish(cid, job, fence)

    async def finish(
        self,
        cid: str,
        job: Job,
        fence: Sequence[Compare],
        error: str | None = None,
        rolled_back: bool = False,
    ) -> Ended | None:
        """Write the job's end: the action's commit and the cluster's next state, or its failure;
        only while this replica still holds the claim it ran the job under (``fence``)."""
        action = BY_NAME[job.action]
        for _ in range(FINISH_ATTEMPTS):
            async with self.lock(cid):
                cluster, read_at = await self.repo.read_cluster(cid)
                if not LIFECYCLE.is_transitional(cluster.state) or cluster.job_id != job.id:
                    # Another run of this job (or a newer job) already recorded its end.
                    self.log.warning("job already ended", cluster_id=cid, job_id=job.id, state=cluster.state)
                    return None
                changes: dict[str, Any] = {}
                # Steps may have recorded results in the job meanwhile (a custom service's per node).
                job = job.model_copy(update={"results": (await self.repo.job(cid, job.id)).results})
                if error is None:
                    changes = action.commit(cluster, action.decode(job.args))
                    ended = job.model_copy(update={"status": "successful", "finished": time.time()})
                else:
                    ended = job.model_copy(
                        update={"status": "failed", "error": error, "finished": time.time()}
                    )
                state = LIFECYCLE.end_state(cluster.state, ok=error is None, rolled_back=rolled_back)
                updated = cluster.model_copy(
                    update={**changes, "state": state, "last_error": error, "updated": time.time()}
                )
                written = await self.store.txn(
                    [Compare(cluster_key(cid), "mod", "==", read_at), *fence],
                    [
                        Op("put", cluster_key(cid), updated.dump()),
                        Op("put", job_key(cid, job.id), ended.dump()),
                    ],
                )
            if written.succeeded:
                self.signals.changed(cid)
                return Ended(updated, ended)
            if not await self._holds(fence):
                self.log.warning(
                    "ownership lost; the job's end is left to the replica that owns the cluster",
                    cluster_id=cid,
                    job_id=job.id,
                )
                return None
        raise ChangedMeanwhile(f"cluster {cid}: the end of job {job.id} could not be written")

    async def _holds(self, fence: Sequence[Compare]) -> bool:
        """Whether the fence still holds (after a refused write: was it the claim, or the record?)."""
        return not fence or (await self.store.txn(list(fence), [])).succeeded

    async def update_record(self, cid: str, change: Callable[[Cluster], dict[str, Any]]) -> Cluster:
        """Write fields of the cluster's record (not its state) under the same lock and guard."""
        for _ in range(FINISH_ATTEMPTS):
            async with self.lock(cid):
                cluster, read_at = await self.repo.read_cluster(cid)
                updated = cluster.model_copy(update={**change(cluster), "updated": time.time()})
                written = await self.store.txn(
                    [Compare(cluster_key(cid), "mod", "==", read_at)],
                    [Op("put", cluster_key(cid), updated.dump())],
                )
            if written.succeeded:
                self.signals.changed(cid)
                return updated
        raise ChangedMeanwhile(f"cluster {cid} kept changing; not updated")

    async def _progress(self, cid: str, record: StepRecord) -> None:
        self.signals.changed(cid, record=False)


async def _clear_operation_keys(ctx: JobContext | None, job: Job) -> None:
    """A failed upgrade, recover or resize takes its operation key (``steps.operation_keys``,
    written for AppCenter-profile apps) with it: nodes must not read an operation that is over."""
    if ctx is None or job.action not in operation_keys.BY_ACTION:
        return
    try:
        await operation_keys.clear_all(ctx.metad, ctx.cid)
    except Exception as exc:  # the failure is reported anyway; a left key goes with the next such job
        ctx.log.warning("operation keys not removed", error=str(exc))
