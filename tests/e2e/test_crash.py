"""Crash safety: pitrixd SIGKILLed at many steps of create, scale out, scale in and delete.

Each case lives one cluster's life (create 1 web + 1 lb, scale web to 3, back to 1, delete) on a
simulator and a real pitrixd process, and kills the daemon once per action, the moment the journal
in etcd shows the chosen step started. The daemon restarts on the same state dir (adopting its
embedded etcd), and the cluster must reach the action's target state with the simulator's ledger
showing exactly the VMs it should: none leaked, none created twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from e2e_daemons import (
    APP,
    Pitrixd,
    current_revision,
    duplicated_names,
    ledger,
    live,
    runtime_definition,
    start_simulator,
    wait_for_key,
    wait_state,
)

from pitrix.cli.client import ApiClient
from pitrix.cli.demo import Child, stop_child
from pitrix.store import Store

pytestmark = pytest.mark.e2e

# Kills per action, in plan order: each kill lands on the job the restarted daemon resumed, so one
# cluster's life covers many steps. Together the cases cover nearly every step of every plan.
CASES = {
    "cloud-calls-and-services": {
        "create": ["metadata", "run-instances", "start:lb"],
        "scale_out": ["run-instances", "register", "converge"],
        "scale_in": ["stop-leaving", "terminate"],
        "delete": ["stop:web+lb", "unregister", "terminate"],
    },
    "boot-registration-agents": {
        "create": ["plan-nodes", "register", "wait-agents", "converge"],
        "scale_out": ["wait-running", "wait-agents", "start:web"],
        "scale_in": ["mark-leaving", "unregister", "converge"],
        "delete": ["metadata", "release-metadata"],
    },
}


@dataclass
class World:
    workdir: Path
    sim: Child
    daemon: Pitrixd
    store: Store
    http: aiohttp.ClientSession
    kills: list[str] = field(default_factory=list)

    @property
    def sim_url(self) -> str:
        return str(self.sim.ready["url"])


@contextlib.asynccontextmanager
async def world_with(tmp_path: Path, runtime: Callable[[Child], dict[str, Any]]) -> AsyncIterator[World]:
    """A simulator and a real pitrixd with the runtime ``runtime(sim)`` defines, torn down after."""
    sim = await start_simulator(tmp_path)
    daemon = Pitrixd(tmp_path)
    store: Store | None = None
    try:
        await daemon.start()
        store = await Store.connect(daemon.etcd_endpoints, prefix="/pitrix", tls=daemon.etcd_tls)
        async with ApiClient(daemon.url) as api:
            await api.post("/v1/runtimes", runtime(sim))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            yield World(tmp_path, sim, daemon, store, http)
    finally:
        if store is not None:
            await store.close()
        await daemon.stop()
        await stop_child(sim)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with world_with(tmp_path, runtime_definition) as built:
        yield built


def step_started(step: str) -> Any:
    def match(key: str, value: dict[str, Any]) -> bool:
        parts = key.strip("/").split("/")
        # /cluster-data/<cid>/steps/<job_id>/<step>
        return (
            len(parts) == 5 and parts[2] == "steps" and parts[4] == step and value.get("status") == "running"
        )

    return match


async def act_and_kill(world: World, steps: list[str], request: Any) -> dict[str, Any]:
    """Send the action; each time the next of ``steps`` starts, SIGKILL pitrixd and start it again.

    Returns the action's answer.
    """
    revision = await current_revision(world.store)
    seen = asyncio.create_task(
        wait_for_key(world.store, "/cluster-data/", revision + 1, step_started(steps[0]))
    )
    try:
        async with ApiClient(world.daemon.url) as api:
            answer = await request(api)
        for number in range(len(steps)):
            key, _ = await seen
            await world.daemon.kill()
            revision = await current_revision(world.store)
            if number + 1 < len(steps):
                seen = asyncio.create_task(
                    wait_for_key(world.store, "/cluster-data/", revision + 1, step_started(steps[number + 1]))
                )
            world.kills.append(key)
            await world.daemon.start()
    except BaseException:
        seen.cancel()
        raise
    return answer


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
async def test_killed_daemon_resumes_every_action(world: World, kills: dict[str, list[str]]) -> None:
    spec = yaml.safe_load(APP.read_text())
    body = {"runtime": "sim", "app": spec, "name": "crash", "counts": {"web": 1, "lb": 1}}

    async def create(api: ApiClient) -> Any:
        return await api.post("/v1/clusters", body)

    began = time.monotonic()
    created = await act_and_kill(world, kills["create"], create)
    cid = created["cluster"]["id"]
    assert all(key.split("/")[2] == cid for key in world.kills), world.kills
    await reach(world, cid, "active", f"create killed at {kills['create']}")
    print(f"\ncreate with {len(kills['create'])} kills: {time.monotonic() - began:.1f}s")
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

        began = time.monotonic()
        await act_and_kill(world, kills[action], scale)
        cluster = await reach(world, cid, "active", f"{action} killed at {kills[action]}")
        print(f"{action} with {len(kills[action])} kills: {time.monotonic() - began:.1f}s")
        assert cluster["counts"] == {"web": count, "lb": 1}
        await check_ledger(world, names(count), f"after {action}")

    async def delete(api: ApiClient) -> Any:
        return await api.delete(f"/v1/clusters/{cid}")

    began = time.monotonic()
    await act_and_kill(world, kills["delete"], delete)
    await reach(world, cid, "deleted", f"delete killed at {kills['delete']}")
    print(f"delete with {len(kills['delete'])} kills: {time.monotonic() - began:.1f}s")
    await check_ledger(world, set(), "after delete")
    killed_at = [key.rsplit("/", 1)[1] for key in world.kills]
    assert killed_at == [step for action in kills.values() for step in action]
    assert world.daemon.starts == 1 + len(killed_at)
