"""A metadata cluster is made by a journaled plan: resumable at its first unfinished step, shared by
ensures that come together, one VM whatever happens (on the simulator, real VMs and metad)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from e2e_cloud import Cloud

from pitrix.runtime.keys import metadata_steps_prefix
from pitrix.runtime.metadata import MetadataClusters, MetadataUnavailable, metadata_name
from pitrix.runtime.metadata_plan import STEPS
from pitrix.store.watch import watch_prefix

pytestmark = pytest.mark.e2e


def _clusters(cloud: Cloud) -> MetadataClusters:
    service = cloud.service
    return MetadataClusters(
        service.store, service.provider_for, sealer=service.sealer, keypairs=service.keypairs
    )


async def _vms_named(cloud: Cloud, name: str) -> list[dict[str, object]]:
    return [vm for vm in await cloud.ledger() if vm["name"] == name]


async def test_the_making_is_journaled_step_by_step(cloud: Cloud) -> None:
    clusters = _clusters(cloud)
    try:
        record = await clusters.ensure("mp1", "sim")
        assert record.status == "ready" and record.job_id
        steps = await clusters.steps("mp1", "sim")
        assert sorted(steps, key=lambda name: steps[name].started) == list(STEPS)
        assert all(step.status == "done" for step in steps.values()), steps
        assert steps["run-instance"].detail == f"made {record.instance_id} ({record.name})"
        assert steps["wait-healthy"].detail == f"metadata service at {record.ip}"
        # Ready: the next ensure reads the record and runs nothing.
        again = await clusters.ensure("mp1", "sim")
        assert again.job_id == record.job_id and await clusters.steps("mp1", "sim") == steps
    finally:
        await clusters.close()


@pytest.mark.parametrize("cut_at", ["wait-running", "bootstrap-issuer"])
async def test_an_ensure_cut_off_mid_plan_resumes_at_its_first_unfinished_step(
    cloud: Cloud, cut_at: str
) -> None:
    """The first ensure stops (as a killed pitrixd would) the moment ``cut_at`` starts; the next
    runs neither plan-vm nor run-instance again, and the VM is the one made before."""
    store = cloud.service.store
    prefix = metadata_steps_prefix("mp2", "sim")
    first = _clusters(cloud)
    since = await store.revision() + 1
    ensure = asyncio.create_task(first.ensure("mp2", "sim"))
    try:
        async with asyncio.timeout(120):
            async for batch in watch_prefix(store, prefix, since):
                if any(
                    event.key.endswith(f"/{cut_at}") and json.loads(event.value)["status"] == "running"
                    for event in batch.events
                    if event.type == "put"
                ):
                    break
    finally:
        ensure.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ensure
        await first.close()
    before = await first.steps("mp2", "sim")
    assert before["run-instance"].status == "done" and before[cut_at].status == "running", before
    second = _clusters(cloud)
    try:
        record = await second.ensure("mp2", "sim")
        after = await second.steps("mp2", "sim")
        assert record.status == "ready"
        for name in ("plan-vm", "run-instance"):
            assert after[name] == before[name], f"{name} ran again"
        assert after[cut_at].started > before[cut_at].started  # run again, from the journal
        assert all(step.status == "done" for step in after.values()), after
        vms = await _vms_named(cloud, metadata_name("mp2", "sim"))
        assert [vm["instance_id"] for vm in vms] == [record.instance_id]  # asked for once
    finally:
        await second.close()


async def test_ensures_that_come_together_share_one_metadata_cluster(cloud: Cloud) -> None:
    """Three first clusters of one owner at once (the hang of issue 24 began so): one plan runs,
    the others wait for it under the lock and all get the same ready metadata cluster."""
    clusters = [_clusters(cloud) for _ in range(3)]
    try:
        async with asyncio.timeout(300):
            records = await asyncio.gather(*(c.ensure("mp3", "sim") for c in clusters))
        assert {r.instance_id for r in records} == {records[0].instance_id}
        assert all(r.status == "ready" for r in records)
        assert len(await _vms_named(cloud, metadata_name("mp3", "sim"))) == 1
        kvs, _ = await cloud.service.store.get_prefix("/_locks/")
        assert [kv.key for kv in kvs if "mp3" in kv.key] == []  # every ensure let go of the lock
    finally:
        for c in clusters:
            await c.close()


async def test_a_lock_lost_mid_plan_stops_it_and_the_ensure_resumes_it(cloud: Cloud) -> None:
    """The lock's lease ends behind the runner's back (expired under load, as etcd sees it) while
    the VM's metad is still coming up: the plan stops, as if killed, and the same ensure queues
    again and resumes it from the journal."""
    store = cloud.service.store
    prefix = metadata_steps_prefix("mp4", "sim")
    clusters = _clusters(cloud)
    since = await store.revision() + 1
    try:
        ensure = asyncio.create_task(clusters.ensure("mp4", "sim"))
        async with asyncio.timeout(120):
            async for batch in watch_prefix(store, prefix, since):
                if any(
                    event.key.endswith("/bootstrap-issuer") and json.loads(event.value)["status"] == "running"
                    for event in batch.events
                    if event.type == "put"
                ):
                    break
        (held,) = (await store.get_prefix("/_locks/metadata%2Fmp4%2Fsim/"))[0]
        await store.revoke_lease(held.lease)
        revoked = time.time()
        before = await clusters.steps("mp4", "sim")
        async with asyncio.timeout(300):
            record = await ensure
        after = await clusters.steps("mp4", "sim")
        assert record.status == "ready" and after.keys() == set(STEPS)
        for name in ("plan-vm", "run-instance", "wait-running"):
            assert after[name] == before[name], f"{name} ran again"
        # Stopped mid-step (the issuer exchange waits for the VM's metad), then run again in the
        # same job once the lock was queued for anew.
        assert before["bootstrap-issuer"].status == "running"
        assert after["bootstrap-issuer"].started > revoked and after["bootstrap-issuer"].status == "done"
        vms = await _vms_named(cloud, metadata_name("mp4", "sim"))
        assert [vm["instance_id"] for vm in vms] == [record.instance_id]
    finally:
        await clusters.close()


async def test_a_vm_stopped_during_its_issuer_bootstrap_is_noticed_and_started_again(cloud: Cloud) -> None:
    """The VM stops while bootstrap-issuer waits on its metad (as when its boot failed after it
    was seen running: two simulators had handed out one address): the step fails once the cloud
    says the VM is stopped, not at its 120 s deadline, and the next ensure starts that VM again."""
    store = cloud.service.store
    prefix = metadata_steps_prefix("mp5", "sim")
    first = _clusters(cloud)
    since = await store.revision() + 1
    ensure = asyncio.create_task(first.ensure("mp5", "sim"))
    try:
        async with asyncio.timeout(120):
            async for batch in watch_prefix(store, prefix, since):
                if any(
                    event.key.endswith("/bootstrap-issuer") and json.loads(event.value)["status"] == "running"
                    for event in batch.events
                    if event.type == "put"
                ):
                    break
    finally:
        ensure.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ensure
        await first.close()
    (vm,) = await _vms_named(cloud, metadata_name("mp5", "sim"))
    provider = await cloud.service.provider_for("sim")
    await provider.stop_instances([str(vm["instance_id"])])
    second = _clusters(cloud)
    try:
        with pytest.raises(
            MetadataUnavailable, match=f"bootstrap-issuer: .*its VM {vm['instance_id']} is stopped"
        ):
            await second.ensure("mp5", "sim")
        record = await second.ensure("mp5", "sim")  # a new job: the same VM, started again
        assert record.status == "ready" and record.instance_id == vm["instance_id"]
        assert [v["instance_id"] for v in await _vms_named(cloud, metadata_name("mp5", "sim"))] == [
            vm["instance_id"]
        ]
    finally:
        await second.close()
