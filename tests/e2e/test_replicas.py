"""Two pitrixd replicas on one etcd: one is SIGKILLed mid-deploy, the other adopts and finishes.

Each cluster is owned through ``/owners/<cid>`` on the owning replica's lease; when the killed
replica's lease runs out, the survivor sees the owner key deleted, claims the cluster and resumes
its job from the journal. The simulator's ledger must show every VM created exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
from e2e_daemons import (
    APP,
    Pitrixd,
    add_runtime,
    current_revision,
    duplicated_names,
    ledger,
    live,
    start_simulator,
    wait_for_key,
    wait_state,
)
from test_crash import step_started

from pitrix.cli.client import ApiClient
from pitrix.cli.demo import stop_child
from pitrix.store import Store
from pitrix.store.tls import EtcdTLS

pytestmark = pytest.mark.e2e
OWNER_TTL = "2"


@pytest.mark.parametrize("kill_at", ["wait-agents"])
async def test_a_killed_replicas_cluster_is_finished_by_the_other(
    etcd_url: str, etcd_tls: EtcdTLS, tmp_path: Path, kill_at: str
) -> None:
    import yaml

    prefix = f"/replicas-{uuid.uuid4().hex[:8]}"
    sim = await start_simulator(tmp_path)
    first = Pitrixd(tmp_path, "pitrixd-a", etcd=[etcd_url], prefix=prefix, etcd_tls=etcd_tls)
    second = Pitrixd(tmp_path, "pitrixd-b", etcd=[etcd_url], prefix=prefix, etcd_tls=etcd_tls)
    store = await Store.connect([etcd_url], prefix=prefix, tls=etcd_tls)
    try:
        await first.start("--owner-ttl", OWNER_TTL, "--replica-id", "a")
        await second.start("--owner-ttl", OWNER_TTL, "--replica-id", "b")
        async with ApiClient(first.url) as api:
            await add_runtime(api, sim)
            revision = await current_revision(store)
            seen = asyncio.create_task(
                wait_for_key(store, "/cluster-data/", revision + 1, step_started(kill_at))
            )
            body = {"runtime": "sim", "app": yaml.safe_load(APP.read_text()), "counts": {"web": 2, "lb": 1}}
            created = await api.post("/v1/clusters", body)
        cid = created["cluster"]["id"]
        await seen
        owner = await store.get(f"/owners/{cid}")
        # Usually the replica that accepted it; the other when a's 2 s lease lapsed on a busy host
        # before the step began (then b adopted it, which is the behaviour under test too).
        assert owner is not None and owner.text in ("a", "b")
        killed, other = (first, second) if owner.text == "a" else (second, first)
        await killed.kill()

        cluster = await wait_state(store, cid, {"active", "failed"})
        assert cluster["state"] == "active", f"{cluster.get('last_error')}\n{other.log_tail()}"
        adopted = await store.get(f"/owners/{cid}")
        assert adopted is not None and adopted.text != owner.text
        entries = await ledger_of(sim.ready["url"])
        assert duplicated_names(entries) == {}
        names = sorted(vm["name"] for vm in live(entries) if vm["image"] != "pitrix-metadata")
        assert names == [f"{cid}-lb-1", f"{cid}-web-1", f"{cid}-web-2"]

        async with ApiClient(other.url) as api:
            job = (await api.delete(f"/v1/clusters/{cid}"))["job"]
        assert job["action"] == "delete"
        assert (await wait_state(store, cid, {"deleted", "failed"}))["state"] == "deleted"
        assert live(await ledger_of(sim.ready["url"])) == []
    finally:
        await store.close()
        await first.stop()
        await second.stop()
        await stop_child(sim)


async def ledger_of(sim_url: str) -> list[dict[str, object]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        return await ledger(http, sim_url)
