"""A member lost while a metadata cluster grows (3 → 5) is replaced before the growth goes on.

The growth's next member (m3: its VM made and running, not yet in etcd's list) cannot join a
cluster short of a member: etcd will not add it (a fourth member with one of three lost leaves no
quorum). The metadata monitor resumed the growth all the same, look after look, and never replaced
the lost member. Now it pauses the growth (its job kept in etcd), replaces the lost member, and the
next look finishes the growth with the replacement among the members."""

from __future__ import annotations

import pytest
from e2e_cloud import Cloud
from e2e_daemons import live, runtime_definition
from test_metadata_members import etcd34  # noqa: F401  (a fixture)

from pitrix.runtime import metadata_grow, metadata_replace
from pitrix.runtime.metadata import MetadataClusters
from pitrix.runtime.metadata_monitor import MetadataMonitor
from pitrix.runtime.recovery import RecoveryPolicy

pytestmark = pytest.mark.e2e


async def test_a_member_lost_mid_growth_is_replaced_first_then_the_growth_goes_on(
    etcd34: None,  # noqa: F811
    cloud: Cloud,
) -> None:
    service = cloud.service
    await service.put_runtime({**runtime_definition(cloud.sim, "hg"), "metadata_size": 3})
    clusters = MetadataClusters(
        service.store, service.provider_for, sealer=service.sealer, keypairs=service.keypairs
    )
    try:
        record = await clusters.ensure("mg", "hg")
        assert len(record.members) == 2
        # The size raised to five; the growth's first job under way: m3's VM made and running.
        await service.put_runtime({**runtime_definition(cloud.sim, "hg"), "metadata_size": 5})
        job = await metadata_grow.begin(clusters, "mg", "hg", 5)
        assert job is not None and job.vm_name == f"{record.name}-m3"
        grow = metadata_grow.MetadataGrow(clusters, "mg", "hg")
        for step in grow.plan().steps[1:3]:  # run-instance, wait-running
            await step.run()
        job = await metadata_grow.load(clusters, "mg", "hg")
        assert job is not None and job.ip
        assert not await metadata_grow.added(clusters, record, job)

        # m1's VM is lost meanwhile.
        provider = await service.provider_for("hg")
        await provider.terminate_instances([record.members[0].instance_id])

        monitor = MetadataMonitor(clusters, RecoveryPolicy())
        assert await monitor.look("mg", "hg", {}) is True
        replaced = await clusters.record("mg", "hg")
        assert replaced is not None
        assert [m.name for m in replaced.members] == [f"{record.name}-m1-g1", f"{record.name}-m2"]
        assert await metadata_replace.load(clusters, "mg", "hg") is None
        paused = await metadata_grow.load(clusters, "mg", "hg")  # the growth waited, its job kept
        assert paused is not None and paused.job_id == job.job_id

        # The next look goes on with the growth: m3 (the VM made before) and m4 join.
        assert await monitor.look("mg", "hg", {}) is True
        grown = await clusters.record("mg", "hg")
        assert grown is not None and not grown.condition
        assert [m.name for m in grown.members] == [
            f"{record.name}-m1-g1",
            f"{record.name}-m2",
            f"{record.name}-m3",
            f"{record.name}-m4",
        ]
        assert grown.members[2].instance_id == job.instance_id
        assert await metadata_grow.load(clusters, "mg", "hg") is None
        listed = await clusters.client(grown).etcd_members()
        assert sorted(m["name"] for m in listed["members"]) == ["m0", "m1", "m2", "m3", "m4"]
        assert all(m["started"] for m in listed["members"])
        vms = {vm["name"] for vm in live(await cloud.ledger())}
        assert f"{record.name}-m1" not in vms
    finally:
        await clusters.close()
