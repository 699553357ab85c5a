"""Steps that turn a failure into their own (a custom service's ``ServiceFailed``, a backup's
``failed`` record) let pitrixd's own etcd being cut off go through as ``StoreUnavailable``: the
executor then journals nothing and the job runs again once etcd answers, where folding it would
have failed the job (or marked the backup failed) for a fault that was neither the service's nor
the backup's. A real etcd, stopped under the step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.stack import TRIVIAL_APP
from pitrix.runtime.backups import BackupRecord, backup_key
from pitrix.runtime.records import Cluster, Job, MetadataCluster
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps import backup
from pitrix.runtime.steps.context import JobContext
from pitrix.runtime.steps.custom import run_custom
from pitrix.runtime.steps.nodes import members
from pitrix.sealing import Sealer
from pitrix.store import Store, StoreUnavailable
from pitrix.store.embedded import EmbeddedEtcd


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EmbeddedEtcd]:
    """An etcd of this test's own, to stop and start under a step."""
    server = EmbeddedEtcd(tmp_path / "etcd", unsafe_no_fsync=True)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def ctx(etcd: EmbeddedEtcd) -> AsyncIterator[JobContext]:
    async with Store([etcd.client_url], prefix="/cut", timeout=1.0, tls=etcd.client_tls) as store:
        cluster = Cluster(
            id="cl-cut", name="t", owner="o", runtime="r", app=parse_spec(TRIVIAL_APP), counts={"node": 1}
        )
        yield JobContext(
            store=store,
            cluster=cluster,
            job=Job(id="j-1", cluster_id="cl-cut", action="service"),
            provider=None,  # type: ignore[arg-type]  # etcd is cut off before anything else is asked
            metadata=MetadataCluster(owner="o", runtime="r", name="m"),
            metad=None,  # type: ignore[arg-type]
            agents=None,  # type: ignore[arg-type]
            sealer=Sealer.generate(),
            keypairs=None,  # type: ignore[arg-type]
        )


async def test_a_custom_service_cut_off_from_etcd_is_no_service_failure(
    ctx: JobContext, etcd: EmbeddedEtcd
) -> None:
    await etcd.stop()
    with pytest.raises(StoreUnavailable):  # was ServiceFailed: the job failed, rolled back
        await run_custom(ctx, "backup", ["node-1"], {}, [])


async def test_a_backup_step_cut_off_from_etcd_leaves_its_record_pending(
    ctx: JobContext, etcd: EmbeddedEtcd
) -> None:
    record = BackupRecord(
        id="bk-1",
        cluster_id=ctx.cid,
        cluster_name="t",
        owner="o",
        runtime="r",
        app=ctx.cluster.app,
        counts={},
    )
    await ctx.store.put(backup_key(ctx.cid, record.id), record.dump())

    async def work() -> str:
        """The step's own read meets a stopped etcd; etcd is back before the step has ended."""
        await etcd.stop()
        try:
            await members(ctx, ["node-1"])
        finally:
            await etcd.start()
        return "unreachable"

    with pytest.raises(StoreUnavailable):
        await backup._failing(ctx, record.id, work)
    kv = await ctx.store.get(backup_key(ctx.cid, record.id))
    assert kv is not None
    kept = BackupRecord.model_validate_json(kv.value)
    assert (kept.status, kept.error) == ("pending", None)  # was "failed": the re-run's record

    async def broken() -> str:
        raise OSError("the node's disk is full")

    with pytest.raises(OSError):  # the backup's own failure still marks it
        await backup._failing(ctx, record.id, broken)
    kv = await ctx.store.get(backup_key(ctx.cid, record.id))
    assert kv is not None
    assert BackupRecord.model_validate_json(kv.value).status == "failed"
