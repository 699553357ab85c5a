"""Reading the runtime's records from etcd: clusters, nodes, jobs, step journals, runtimes.

Every read of a record goes through here, so how a record is decoded (and a secret stored in clear
before sealing existed is sealed on its way in) is decided once. Nothing here caches: the record
in etcd is the one source of truth, whichever replica wrote it.
"""

from __future__ import annotations

from pitrix.runtime.journal import Journal
from pitrix.runtime.keys import (
    CLUSTERS,
    RUNTIMES,
    cluster_key,
    job_key,
    jobs_prefix,
    nodes_prefix,
    runtime_key,
)
from pitrix.runtime.records import Cluster, Job, Node, Runtime, StepRecord
from pitrix.runtime.secret_env import seal_passwords
from pitrix.sealing import Sealer
from pitrix.store import Store
from pitrix.store.types import KV


class NotFound(LookupError):
    """No such cluster, job or runtime (for this owner)."""


class Repository:
    def __init__(self, store: Store, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer

    # -- clusters ---------------------------------------------------------------------------------

    def decode_cluster(self, raw: bytes) -> Cluster:
        """A stored cluster, its password values sealed (one stored in clear is, from its next write)."""
        return seal_passwords(Cluster.model_validate_json(raw), self.sealer)

    async def read_cluster(self, cid: str, owner: str | None = None) -> tuple[Cluster, int]:
        """The cluster and the revision it was read at (the guard of a write that depends on it);
        one of another owner than ``owner`` (when given) is reported exactly like a missing one."""
        kv = await self.store.get(cluster_key(cid))
        cluster = self.decode_cluster(kv.value) if kv is not None else None
        if kv is None or cluster is None or (owner is not None and cluster.owner != owner):
            raise NotFound(f"cluster {cid!r} does not exist")
        return cluster, kv.mod_revision

    async def cluster(self, cid: str, owner: str | None = None) -> Cluster:
        """The cluster (see ``read_cluster`` for ``owner``)."""
        cluster, _ = await self.read_cluster(cid, owner)
        return cluster

    async def cluster_kv(self, cid: str) -> KV | None:
        return await self.store.get(cluster_key(cid))

    async def clusters(self, owner: str | None = None, include_deleted: bool = False) -> list[Cluster]:
        kvs, _ = await self.store.get_prefix(CLUSTERS)
        clusters = [self.decode_cluster(kv.value) for kv in kvs]
        return [
            c
            for c in sorted(clusters, key=lambda c: c.created)
            if (owner is None or c.owner == owner) and (include_deleted or c.state != "deleted")
        ]

    async def clusters_at(self) -> tuple[list[Cluster], int]:
        """Every cluster and the revision of the read (a watch from the next one misses nothing)."""
        kvs, revision = await self.store.get_prefix(CLUSTERS)
        return [self.decode_cluster(kv.value) for kv in kvs], revision

    # -- nodes and jobs ---------------------------------------------------------------------------

    async def nodes(self, cid: str) -> list[Node]:
        kvs, _ = await self.store.get_prefix(nodes_prefix(cid))
        return sorted((Node.model_validate_json(kv.value) for kv in kvs), key=lambda n: (n.role, n.index))

    async def job(self, cid: str, job_id: str) -> Job:
        kv = await self.store.get(job_key(cid, job_id))
        if kv is None:
            raise NotFound(f"job {job_id!r} of cluster {cid!r} does not exist")
        return Job.model_validate_json(kv.value)

    async def jobs(self, cid: str) -> list[Job]:
        kvs, _ = await self.store.get_prefix(jobs_prefix(cid))
        return sorted((Job.model_validate_json(kv.value) for kv in kvs), key=lambda j: j.created)

    async def steps(self, cid: str, job_id: str) -> list[StepRecord]:
        records = await Journal(self.store, cid, job_id).records()
        return sorted(records.values(), key=lambda r: r.started)

    # -- runtimes ---------------------------------------------------------------------------------

    async def runtime(self, name: str) -> Runtime:
        kv = await self.store.get(runtime_key(name))
        if kv is None:
            raise NotFound(f"runtime {name!r} does not exist")
        return await self._open_runtime(kv)

    async def runtime_or_none(self, name: str) -> Runtime | None:
        kv = await self.store.get(runtime_key(name))
        return None if kv is None else await self._open_runtime(kv)

    async def runtimes(self) -> list[Runtime]:
        kvs, _ = await self.store.get_prefix(RUNTIMES)
        return [await self._open_runtime(kv) for kv in kvs]

    async def save_runtime(self, runtime: Runtime) -> None:
        await self.store.put(runtime_key(runtime.name), runtime.sealed(self.sealer))

    async def _open_runtime(self, kv: KV) -> Runtime:
        """A runtime with its credentials opened; one stored in clear is sealed in place."""
        runtime, clear = Runtime.opened(kv.value, self.sealer)
        if clear:
            await self.store.compare_and_swap(kv.key, kv.mod_revision, runtime.sealed(self.sealer))
        return runtime
