"""The snapshot half of the provider contract (backups): the same calls behave the same on every cloud.

Every cloud is a face of the simulator (whose snapshots are copies of the volume's directory: the
data is checked there). Each test works under a
cluster id of its own and leaves no volume and no snapshot behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from provider_harness import Cloud
from test_contract import cid, cloud, sim, spec  # noqa: F401  (shared fixtures)

from pitrix.providers.base import Provider, ProviderError, Snapshot, VolumeSpec
from pitrix.providers.registry import load_provider
from simulator.cloud import Simulator

pytestmark = pytest.mark.parametrize("cloud", ["qingcloud", "aws", "openstack"], indirect=True)


@pytest.fixture
async def provider(cloud: Cloud, cid: str) -> AsyncIterator[Provider]:  # noqa: F811
    client = load_provider(cloud.name, cloud.runtime)
    try:
        yield client
        snapshots = await client.describe_snapshots(name_prefix=cid)
        if snapshots:
            await client.delete_snapshots([s.snapshot_id for s in snapshots])
        volumes = await client.describe_volumes(name_prefix=cid)
        if volumes:
            await client.delete_volumes([v.volume_id for v in volumes])
        assert not volumes and not snapshots, f"test left {volumes} {snapshots}"
    finally:
        await client.close()


async def ensure_snapshot(provider: Provider, volume_id: str, name: str, backup: str) -> Snapshot:
    """The runtime's step: look the deterministic name up first, take one only when absent."""
    found = [s for s in await provider.describe_snapshots(name_prefix=name) if s.name == name]
    if found:
        return found[0]
    return await provider.create_snapshot(volume_id, name, {"pitrix:backup": backup})


def sim_path(sim: Simulator, kind: str, wanted: str) -> Path:  # noqa: F811
    ledger = sim.fleet.volume_ledger() if kind == "volumes" else sim.fleet.snapshot_ledger()
    key = "volume_id" if kind == "volumes" else "snapshot_id"
    return Path(next(e["path"] for e in ledger if e[key] == wanted))


async def test_snapshot_and_volume_from_it(
    cloud: Cloud,  # noqa: F811
    provider: Provider,
    cid: str,  # noqa: F811
    request: pytest.FixtureRequest,
) -> None:
    source = await provider.create_volume(
        VolumeSpec(name=f"{cid}-n1-vol", size=3, tags={"pitrix:cluster": cid})
    )
    # something to find again in the copy
    simulator: Simulator = request.getfixturevalue("sim")
    (sim_path(simulator, "volumes", source.volume_id) / "kept.txt").write_text("before\n")

    name = f"{cid}-bk-n1"
    taken = await ensure_snapshot(provider, source.volume_id, name, cid)
    again = await ensure_snapshot(provider, source.volume_id, name, cid)
    assert again.snapshot_id == taken.snapshot_id  # repeated: still one snapshot
    assert (taken.name, taken.volume_id, taken.size, taken.status) == (name, source.volume_id, 3, "available")
    [by_id] = await provider.describe_snapshots(snapshot_ids=[taken.snapshot_id])
    assert by_id.snapshot_id == taken.snapshot_id and by_id.name == name
    assert await provider.describe_snapshots(name_prefix=f"x{cid}") == []
    assert await provider.describe_snapshots(snapshot_ids=[]) == []

    # a write after the snapshot is not in it
    (sim_path(simulator, "volumes", source.volume_id) / "kept.txt").write_text("after\n")
    made = await provider.create_volume(
        VolumeSpec(name=f"{cid}-n2-vol", size=3, tags={"pitrix:cluster": cid}, snapshot_id=taken.snapshot_id)
    )
    assert made.volume_id != source.volume_id
    assert (made.name, made.size, made.status) == (f"{cid}-n2-vol", 3, "available")
    assert (sim_path(simulator, "volumes", made.volume_id) / "kept.txt").read_text() == "before\n"

    # A snapshot outlives its volume, and both volumes go on their own.
    await provider.delete_volumes([made.volume_id, source.volume_id])
    assert [s.snapshot_id for s in await provider.describe_snapshots(name_prefix=cid)] == [taken.snapshot_id]
    await provider.delete_snapshots([taken.snapshot_id])
    await provider.delete_snapshots([taken.snapshot_id])  # gone already: skipped
    assert await provider.describe_snapshots(name_prefix=cid) == []


async def test_snapshot_refusals(cloud: Cloud, provider: Provider, cid: str) -> None:  # noqa: F811
    with pytest.raises(ProviderError) as unknown_volume:
        await provider.create_snapshot(_unknown_volume(cloud), f"{cid}-bk-x", {})
    assert unknown_volume.value.failure == "terminal"
    with pytest.raises(ProviderError) as unknown_snapshot:
        await provider.create_volume(
            VolumeSpec(name=f"{cid}-n9-vol", size=1, snapshot_id=_unknown_snapshot(cloud))
        )
    assert unknown_snapshot.value.failure == "terminal"


def _unknown_volume(backend: Cloud) -> str:
    return {"aws": "vol-0123456789abcdef0", "openstack": "00000000-0000-4000-8000-000000000000"}.get(
        backend.name, "vol-nevrwas0"
    )


def _unknown_snapshot(backend: Cloud) -> str:
    return {"aws": "snap-0123456789abcdef0", "openstack": "00000000-0000-4000-8000-000000000000"}.get(
        backend.name, "ss-nevrwas0"
    )
