"""A pitrixd replica frozen (SIGSTOP) past its lease comes back (SIGCONT) and gets its share back.

Three real pitrixd processes on one etcd share 30 idle clusters (their cloud refuses every call,
so each create fails at once and leaves its cluster idle). One replica (or two) is frozen until
its lease has run out and the others have adopted its clusters; once it wakes, it takes a new
lease, announces itself again, and the others hand it idle clusters until the shares are even.
(A second loss while the woken replica still reconsiders its clusters is
tests/runtime/test_ownership.py's: its timing cannot be pinned with signals.)
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from e2e_daemons import Pitrixd

from pitrix.cli.client import ApiClient
from pitrix.store import Store
from pitrix.store.tls import EtcdTLS
from tests.fleet_keys import owner_keys, tally, until

pytestmark = pytest.mark.e2e
OWNER_TTL = "2"
CLUSTERS = 30
DEADLINE = 60.0
DEAD_CLOUD = {
    "name": "dead",
    "provider": "qingcloud",
    "endpoint": "http://127.0.0.1:9",
    "zone": "z1",
    "access_key_id": "AK",
    "secret_access_key": "very-secret",
}
APP = {"name": "demo", "roles": [{"name": "web", "count": 1, "image": "demo"}]}


@pytest_asyncio.fixture
async def fleet(
    etcd_url: str, etcd_tls: EtcdTLS, tmp_path: Path
) -> AsyncIterator[tuple[dict[str, Pitrixd], Store]]:
    prefix = f"/return-{uuid.uuid4().hex[:8]}"
    replicas = {
        name: Pitrixd(tmp_path, f"pitrixd-{name}", etcd=[etcd_url], prefix=prefix, etcd_tls=etcd_tls)
        for name in "abc"
    }
    store = await Store.connect([etcd_url], prefix=prefix, tls=etcd_tls)
    try:
        await asyncio.gather(
            *(r.start("--owner-ttl", OWNER_TTL, "--replica-id", name) for name, r in replicas.items())
        )
        yield replicas, store
    finally:
        for replica in replicas.values():  # a stopped process would not hear the SIGTERM
            if replica.child is not None and replica.child.process.returncode is None:
                replica.child.process.send_signal(signal.SIGCONT)
        await store.close()
        for replica in replicas.values():
            await replica.stop()


def even(owners: dict[str, str]) -> bool:
    return sorted(tally(owners).values()) == [CLUSTERS // 3] * 3


@pytest.mark.parametrize("names", ["b", "bc"])
async def test_a_replica_frozen_past_its_lease_gets_its_share_back(
    fleet: tuple[dict[str, Pitrixd], Store], names: str
) -> None:
    """``names`` are frozen together (two of three: the third adopts everything)."""
    replicas, store = fleet
    async with ApiClient(replicas["a"].url) as api:
        await api.post("/v1/runtimes", DEAD_CLOUD)
        for i in range(CLUSTERS):
            await api.post("/v1/clusters", {"runtime": "dead", "app": APP, "name": f"c{i}"})
    await until(store, owner_keys, even, "shares even", DEADLINE)
    frozen = [child for n in names if (child := replicas[n].child) is not None]
    assert len(frozen) == len(names)
    for child in frozen:
        child.process.send_signal(signal.SIGSTOP)
    try:
        # past its lease: its keys gone, its clusters adopted by the other two
        await until(
            store,
            owner_keys,
            lambda o: not set(names) & set(tally(o)) and len(o) == CLUSTERS,
            "adopted",
            DEADLINE,
        )
    finally:
        for child in frozen:
            child.process.send_signal(signal.SIGCONT)
    # awake: a new lease, announced; the others hand idle clusters over until the shares are even
    now = await until(store, owner_keys, even, "shares even again", DEADLINE)
    assert all(tally(now)[n] == CLUSTERS // 3 for n in names)
    # Each cluster's history, written by whichever replica owned it when (the frozen ones' events
    # caught up by their adopters), reaches its record's last write and reads the same everywhere.
    await until(store, histories_behind, lambda behind: not behind, "histories complete", DEADLINE, ("/",))
    for cid in sorted(now)[:3]:
        seen = []
        for replica in replicas.values():
            async with ApiClient(replica.url) as api:
                seen.append([e["id"] for e in (await api.get(f"/v1/clusters/{cid}/events"))["events"]])
        assert seen[0] and seen[0] == seen[1] == seen[2], seen


async def histories_behind(store: Store) -> list[str]:
    """The clusters whose newest kept event is older than their record's last write."""
    behind = []
    for kv in (await store.get_prefix("/clusters/"))[0]:
        cid = kv.key.removeprefix("/clusters/")
        kept, _ = await store.get_prefix(f"/event-log/{cid}/")
        if not kept or int(kept[-1].key.rpartition("/")[2].partition(".")[0]) < kv.mod_revision:
            behind.append(cid)
    return behind
