"""The journal of a job's steps in etcd, so a restarted pitrixd resumes where it stopped.

A journal given a fence (``Ownership.fence``) writes each record in a transaction guarded by it:
a replica that lost the cluster to another one cannot overwrite the new owner's run of the job,
and hears ``LostOwnership`` instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pitrix.runtime.keys import step_key
from pitrix.runtime.ownership import LostOwnership
from pitrix.runtime.records import StepRecord
from pitrix.store import Store
from pitrix.store.types import Compare, Op


def starting(name: str) -> StepRecord:
    """A step's start record (written by ``started`` or ``write_all``)."""
    return StepRecord(name=name, status="running", started=time.time())


def ended(record: StepRecord, detail: str | None = None) -> StepRecord:
    """A started step's record once it has succeeded (written by ``finished`` or ``write_all``)."""
    return record.model_copy(update={"status": "done", "finished": time.time(), "detail": detail or ""})


# The most records one journal transaction holds (etcd refuses more than 128 operations unless
# told otherwise; the fence's comparisons are counted apart).
WRITE_OPS = 100


class Journal:
    """Start and end records of one job's steps.

    A cluster's job journals under its cluster's data; anything else run as a plan (a metadata
    cluster's making) gives its own ``prefix``, ``cluster_id`` then only labels its logs.
    """

    def __init__(
        self,
        store: Store,
        cluster_id: str,
        job_id: str,
        fence: Sequence[Compare] | None = None,
        *,
        prefix: str | None = None,
    ) -> None:
        self.store = store
        self.cluster_id = cluster_id
        self.job_id = job_id
        self.fence = list(fence) if fence is not None else None
        self.prefix = prefix if prefix is not None else step_key(cluster_id, job_id, "")
        if not self.prefix.endswith("/"):
            raise ValueError(f"prefix: must end with '/', got {self.prefix!r}")

    def _key(self, name: str) -> str:
        return self.prefix + name

    async def records(self) -> dict[str, StepRecord]:
        prefix = self.prefix
        kvs, _ = await self.store.get_prefix(prefix)
        return {kv.key[len(prefix) :]: StepRecord.model_validate_json(kv.value) for kv in kvs}

    async def _write(self, record: StepRecord) -> None:
        key, value = self._key(record.name), record.dump()
        if self.fence is None:
            await self.store.put(key, value)
            return
        written = await self.store.txn(self.fence, [Op("put", key, value)])
        if not written.succeeded:
            raise LostOwnership(self.cluster_id, f"journal write of step {record.name} refused")

    async def write_all(self, records: Sequence[StepRecord]) -> None:
        """Several steps' records in one transaction (guarded by the fence, when there is one):
        the end of one layer's step with the starts of the next layer's (see ``executor``)."""
        ops = [Op("put", self._key(r.name), r.dump()) for r in records]
        for start in range(0, len(ops), WRITE_OPS):  # a layer of hundreds of steps: etcd's limit
            written = await self.store.txn(self.fence or [], ops[start : start + WRITE_OPS])
            if not written.succeeded:
                names = ", ".join(r.name for r in records)
                raise LostOwnership(self.cluster_id, f"journal write of steps {names} refused")

    async def started(self, name: str) -> StepRecord:
        record = starting(name)
        await self._write(record)
        return record

    async def retrying(self, record: StepRecord, attempt: int, attempts: int, error: str) -> StepRecord:
        """The step runs again: which attempt of how many, and why the last one failed."""
        again = record.model_copy(update={"attempt": attempt, "attempts": attempts, "last_error": error})
        await self._write(again)
        return again

    async def finished(self, record: StepRecord, detail: str | None = None) -> StepRecord:
        done = ended(record, detail)
        await self._write(done)
        return done

    async def failed(self, record: StepRecord, error: str) -> StepRecord:
        failed = record.model_copy(update={"status": "failed", "finished": time.time(), "error": error})
        await self._write(failed)
        return failed
