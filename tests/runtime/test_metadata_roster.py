"""pitrixd's roster reconciler against the embedded etcd and real metads: each ready metadata
cluster record's member URLs reach its metad, again after a change, never twice for nothing."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from pitrix.metad import roster
from pitrix.metad.server import Metad
from pitrix.providers.base import Provider
from pitrix.runtime.keys import metadata_key
from pitrix.runtime.metadata import MetadataClusters
from pitrix.runtime.metadata_roster import MetadataRoster
from pitrix.runtime.records import MetadataCluster, MetadataMember
from pitrix.sealing import Sealer
from pitrix.store import Store
from pitrix.store.embedded import EtcdTLS

DEADLINE = 20.0


@pytest.fixture
async def metad_store(etcd_url: str, etcd_tls: EtcdTLS) -> AsyncIterator[Store]:
    """The metadata cluster's own etcd: the session etcd under another prefix."""
    s = await Store.connect([etcd_url], prefix=f"/test-meta-{uuid.uuid4().hex}", tls=etcd_tls)
    try:
        yield s
    finally:
        await s.delete_prefix("")
        await s.close()


async def _no_cloud(runtime: str) -> Provider:
    raise AssertionError(f"the reconciler asked for runtime {runtime}'s cloud")


async def _until(reconciler: MetadataRoster, done: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE), reconciler.settled:
        await reconciler.settled.wait_for(done)


async def _published(metad: Metad) -> list[str] | None:
    node = metad.mirror.tree.live(roster.KEY)
    return roster.published(node.obj()) if node is not None else None


async def test_reconciler_publishes_members_once_and_follows_changes(
    store: Store, metad_store: Store, sealer: Sealer, etcd_url: str, etcd_tls: EtcdTLS
) -> None:
    block = random.Random(os.getpid() + uuid.uuid4().int).randrange(1, 250)
    ip, gone, later = (f"127.104.{block}.{k}" for k in (1, 2, 3))
    metad = Metad(metad_store, ip, 8080, 9611, wait_timeout=5.0)
    await metad.start()
    clusters = MetadataClusters(store, _no_cloud, sealer=sealer, tls=False)
    record = MetadataCluster(
        owner="usr-a",
        runtime="rt",
        name="pitrix-meta-usr-a-rt",
        ip=ip,
        status="ready",
        members=[MetadataMember(name="pitrix-meta-usr-a-rt-m1", ip=gone)],
    )
    key = metadata_key("usr-a", "rt")
    await store.put(key, record.sealed(sealer))
    # One still being made (nothing published for it), and one whose metad is not up yet.
    making = MetadataCluster(owner="usr-b", runtime="rt", name="pitrix-meta-usr-b-rt", ip=gone)
    await store.put(metadata_key("usr-b", "rt"), making.sealed(sealer))
    late = MetadataCluster(owner="usr-c", runtime="rt", name="pitrix-meta-usr-c-rt", ip=later, status="ready")
    await store.put(metadata_key("usr-c", "rt"), late.sealed(sealer))
    reconciler = MetadataRoster(store, clusters, retry_first=0.05, retry_cap=0.2)
    second: Metad | None = None
    try:
        await reconciler.start()
        await _until(reconciler, lambda: reconciler.published == 1)
        urls = [f"http://{ip}:8080", f"http://{gone}:8080"]
        assert await _published(metad) == urls == record.instance_urls
        assert reconciler.pending()  # usr-c's metad does not answer: tried again, with backoff
        written = await metad_store.get(roster.DIGEST_KEY)
        assert written is not None

        # A pitrixd restart looks at every record again and writes nothing that is already there.
        await reconciler.stop()
        reconciler = MetadataRoster(store, clusters, retry_first=0.05, retry_cap=0.2)
        await reconciler.start()
        await _until(reconciler, lambda: reconciler.looks >= 3)
        assert reconciler.published == 0
        again = await metad_store.get(roster.DIGEST_KEY)
        assert again is not None and again.mod_revision == written.mod_revision

        # usr-c's metad comes up: published at the next try.
        late_store = await Store.connect([etcd_url], prefix=f"/test-meta-{uuid.uuid4().hex}", tls=etcd_tls)
        second = Metad(late_store, later, 8080, 9611, wait_timeout=5.0)
        await second.start()
        await _until(reconciler, lambda: reconciler.published == 1)
        assert await _published(second) == [f"http://{later}:8080"]

        # Member 1 is replaced (mdrep's job updates the record): the new list follows.
        moved = record.model_copy(
            update={"members": [MetadataMember(name="pitrix-meta-usr-a-rt-m1", ip=later)]}
        )
        await store.put(key, moved.sealed(sealer))
        await _until(reconciler, lambda: reconciler.published == 2)
        assert await _published(metad) == [f"http://{ip}:8080", f"http://{later}:8080"]
        assert not reconciler.pending()
    finally:
        await reconciler.stop()
        await clusters.close()
        await metad.stop()
        if second is not None:
            await second.stop()
            await second.store.delete_prefix("")
            await second.store.close()
