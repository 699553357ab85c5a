"""Sealing what an older pitrixd stored in clear, once per etcd, at the first start that can.

Every reader already accepts clear values and most seal them when they next write; this sweep
makes that happen at once, so an upgraded etcd holds no clear secret in its current revision
(old revisions keep them until etcd compacts). Each rewrite is a compare-and-swap on the revision
read, so a record another replica changed meanwhile is left to its writer, who seals it. A marker
key records a finished sweep; replicas sweeping together only repeat each other's work.
"""

from __future__ import annotations

import json
import time

from pitrix.logs import get_logger
from pitrix.runtime import keys
from pitrix.runtime.records import Cluster, Job, MetadataCluster, Runtime
from pitrix.runtime.secret_env import seal_job, seal_passwords
from pitrix.sealing import Sealer, is_sealed
from pitrix.store import Store

MARKER = keys.SEALED_MARKER


async def _seal_whole(store: Store, sealer: Sealer, prefix: str, exact: bool = False) -> int:
    """Records sealed whole (the root CA, SSH private keys, bootstrap tokens) left in clear."""
    if exact:
        kv = await store.get(prefix)
        kvs = [kv] if kv is not None else []
    else:
        kvs, _ = await store.get_prefix(prefix)
    count = 0
    for kv in kvs:
        if not is_sealed(kv.value):
            count += await store.compare_and_swap(kv.key, kv.mod_revision, sealer.seal(kv.value, kv.key))
    return count


async def seal_legacy(store: Store, sealer: Sealer) -> dict[str, int]:
    """Seal every clear secret (unless a sweep finished before); how many records of each kind."""
    if await store.get(MARKER) is not None:
        return {}
    sealed = {"whole": 0, "runtimes": 0, "metadata": 0, "clusters": 0, "jobs": 0}
    sealed["whole"] += await _seal_whole(store, sealer, keys.CA, exact=True)
    sealed["whole"] += await _seal_whole(store, sealer, keys.KEYPAIRS)
    kvs, _ = await store.get_prefix(keys.RUNTIMES)
    for kv in kvs:
        runtime, clear = Runtime.opened(kv.value, sealer)
        if clear:
            sealed["runtimes"] += await store.compare_and_swap(
                kv.key, kv.mod_revision, runtime.sealed(sealer)
            )
    kvs, _ = await store.get_prefix(keys.METADATA_CLUSTERS)
    for kv in kvs:
        issuer = json.loads(kv.value).get("issuer_pem")
        if issuer and not is_sealed(issuer):
            record = MetadataCluster.opened(kv.value, sealer)
            sealed["metadata"] += await store.compare_and_swap(kv.key, kv.mod_revision, record.sealed(sealer))
    kvs, _ = await store.get_prefix(keys.CLUSTERS)
    for kv in kvs:
        cluster = Cluster.model_validate_json(kv.value)
        resealed = seal_passwords(cluster, sealer)
        if resealed is not cluster:
            sealed["clusters"] += await store.compare_and_swap(kv.key, kv.mod_revision, resealed.dump())
        sealed["whole"] += await _seal_whole(store, sealer, keys.tokens_prefix(cluster.id))
        jobs, _ = await store.get_prefix(keys.jobs_prefix(cluster.id))
        for job_kv in jobs:
            job = Job.model_validate_json(job_kv.value)
            if job.action != "update_env":
                continue
            again = seal_job(job, cluster, sealer)
            if again is not job:
                sealed["jobs"] += await store.compare_and_swap(job_kv.key, job_kv.mod_revision, again.dump())
    await store.put(MARKER, str(time.time()))
    if any(sealed.values()):
        get_logger("pitrix.secrets").info("sealed records stored in clear", **sealed)
    return sealed
