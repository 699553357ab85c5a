"""Crash safety: pitrixd SIGKILLed at many steps of create, scale out, scale in and delete.

Each case lives one cluster's life (create 1 web + 1 lb, scale web to 3, back to 1, delete) on a
simulator and a real pitrixd process, and kills the daemon once per action, the moment the journal
in etcd shows the chosen step started. The daemon restarts on the same state dir (adopting its
embedded etcd), and the cluster must reach the action's target state with the simulator's ledger
showing exactly the VMs it should: none leaked, none created twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
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

from pitrix.cli.client import ApiClient
from pitrix.cli.demo import Child, stop_child
from pitrix.store import Store
from simulator.testing import random_network

pytestmark = pytest.mark.e2e

# One kill per action, at the step named; together the cases cover most steps of every plan.
CASES = {
    "cloud-calls": {
        "create": "run-instances",
        "scale_out": "run-instances",
        "scale_in": "terminate",
        "delete": "terminate",
    },
    "metadata-and-boot": {
        "create": "metadata",
        "scale_out": "wait-running",
        "scale_in": "stop-leaving",
        "delete": "release-metadata",
    },
    "registration": {
        "create": "register",
        "scale_out": "register",
        "scale_in": "unregister",
        "delete": "unregister",
    },
    "services": {
        "create": "start:lb",
        "scale_out": "start:web",
        "scale_in": "mark-leaving",
        "delete": "metadata",
    },
    "agents-and-convergence": {
        "create": "wait-agents",
        "scale_out": "converge",
        "scale_in": "converge",
        "delete": "terminate",
    },
}


@dataclass
class World:
    workdir: Path
    sim: Child
    daemon: Pitrixd
    store: Store
    http: aiohttp.ClientSession

    @property
    def sim_url(self) -> str:
        return str(self.sim.ready["url"])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    sim = await start_simulator(tmp_path, random_network())
    daemon = Pitrixd(tmp_path)
    store: Store | None = None
    try:
        await daemon.start()
        store = await Store.connect(daemon.etcd_endpoints, prefix="/pitrix")
        async with ApiClient(daemon.url) as api:
            await add_runtime(api, sim)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield World(tmp_path, sim, daemon, store, http)
    finally:
        if store is not None:
            await store.close()
        await daemon.stop()
        await stop_child(sim)


def step_started(step: str) -> Any:
    def match(key: str, value: dict[str, Any]) -> bool:
        parts = key.strip("/").split("/")
        # /cluster-data/<cid>/steps/<job_id>/<step>
        return (
            len(parts) == 5 and parts[2] == "steps" and parts[4] == step and value.get("status") == "running"
        )

    return match


async def act_and_kill(world: World, step: str, request: Any) -> tuple[dict[str, Any], str]:
    """Send the action, SIGKILL pitrixd once ``step`` has started, start it again.

    Returns the action's answer and the key of the journal record that triggered the kill.
    """
    revision = await current_revision(world.store)
    seen = asyncio.create_task(wait_for_key(world.store, "/cluster-data/", revision + 1, step_started(step)))
    try:
        async with ApiClient(world.daemon.url) as api:
            answer = await request(api)
        key, _ = await seen
    except BaseException:
        seen.cancel()
        raise
    await world.daemon.kill()
    await world.daemon.start()
    return answer, key


async def check_ledger(world: World, expected_names: set[str], when: str) -> None:
    entries = await ledger(world.http, world.sim_url)
    assert duplicated_names(entries) == {}, f"{when}: a VM was created twice: {entries}"
    alive = sorted(vm["name"] for vm in live(entries))
    assert alive == sorted(expected_names), f"{when}: live VMs {alive}, expected {sorted(expected_names)}"


async def reach(world: World, cid: str, state: str, when: str) -> dict[str, Any]:
    cluster = await wait_state(world.store, cid, {state, "failed"})
    assert cluster["state"] == state, (
        f"{when}: cluster is {cluster['state']}: {cluster.get('last_error')}\n{world.daemon.log_tail()}"
    )
    return cluster


@pytest.mark.parametrize("kills", list(CASES.values()), ids=list(CASES))
async def test_killed_daemon_resumes_every_action(world: World, kills: dict[str, str]) -> None:
    spec = yaml.safe_load(APP.read_text())
    body = {"runtime": "sim", "app": spec, "name": "crash", "counts": {"web": 1, "lb": 1}}

    async def create(api: ApiClient) -> Any:
        return await api.post("/v1/clusters", body)

    created, key = await act_and_kill(world, kills["create"], create)
    cid = created["cluster"]["id"]
    assert key.split("/")[2] == cid, key
    await reach(world, cid, "active", f"create killed at {kills['create']}")
    metadata = {
        vm["name"] for vm in live(await ledger(world.http, world.sim_url)) if vm["image"] == "pitrix-metadata"
    }
    assert len(metadata) == 1

    def names(web: int) -> set[str]:
        return metadata | {f"{cid}-lb-1"} | {f"{cid}-web-{i}" for i in range(1, web + 1)}

    await check_ledger(world, names(1), "after create")

    for count, action in ((3, "scale_out"), (1, "scale_in")):

        async def scale(api: ApiClient, count: int = count) -> Any:
            return await api.post(f"/v1/clusters/{cid}/scale", {"role": "web", "count": count})

        await act_and_kill(world, kills[action], scale)
        cluster = await reach(world, cid, "active", f"{action} killed at {kills[action]}")
        assert cluster["counts"] == {"web": count, "lb": 1}
        await check_ledger(world, names(count), f"after {action}")

    async def delete(api: ApiClient) -> Any:
        return await api.delete(f"/v1/clusters/{cid}")

    await act_and_kill(world, kills["delete"], delete)
    await reach(world, cid, "deleted", f"delete killed at {kills['delete']}")
    await check_ledger(world, set(), "after delete")
    assert world.daemon.starts == 5
