"""pitrixd SIGKILLed while it makes a metadata cluster: the next one resumes the metadata plan at its
first unfinished step, and the owner still gets exactly one metadata VM.

The kills land the moment the metadata job's journal (``/metadata-data/<owner>/<runtime>/steps/``)
shows the chosen step started, as tests/e2e/test_crash.py does for a cluster's own steps.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import yaml
from e2e_daemons import APP, current_revision, ledger, live, wait_for_key
from test_crash import World, check_ledger, reach, world  # noqa: F401 (world: its fixture)

from pitrix.cli.client import ApiClient
from pitrix.runtime.keys import metadata_steps_prefix

pytestmark = pytest.mark.e2e
KILLS = ["run-instance", "wait-running", "bootstrap-issuer"]


def metadata_step_started(step: str) -> Any:
    def match(key: str, value: dict[str, Any]) -> bool:
        # /metadata-data/<owner>/<runtime>/steps/<job_id>/<step>
        return key.rsplit("/", 1)[-1] == step and value.get("status") == "running"

    return match


async def test_killed_daemon_resumes_the_metadata_plan(world: World) -> None:  # noqa: F811 (the fixture)
    prefix = metadata_steps_prefix("default", "sim")
    spec = yaml.safe_load(APP.read_text())
    body = {"runtime": "sim", "app": spec, "name": "meta-crash", "counts": {"web": 1, "lb": 1}}
    revision = await current_revision(world.store)
    seen = asyncio.create_task(
        wait_for_key(world.store, "/metadata-data/", revision + 1, metadata_step_started(KILLS[0]))
    )
    try:
        async with ApiClient(world.daemon.url) as api:
            created = await api.post("/v1/clusters", body)
        for number in range(len(KILLS)):
            key, _ = await seen
            await world.daemon.kill()
            world.kills.append(key)
            if number + 1 < len(KILLS):
                revision = await current_revision(world.store)
                seen = asyncio.create_task(
                    wait_for_key(
                        world.store, "/metadata-data/", revision + 1, metadata_step_started(KILLS[number + 1])
                    )
                )
            await world.daemon.start()
    except BaseException:
        seen.cancel()
        raise
    cid = created["cluster"]["id"]
    assert [key.rsplit("/", 1)[-1] for key in world.kills] == KILLS
    assert all(key.startswith(prefix) for key in world.kills), world.kills
    await reach(world, cid, "active", f"create killed at metadata steps {KILLS}")
    metadata = [
        vm for vm in live(await ledger(world.http, world.sim_url)) if vm["image"] == "pitrix-metadata"
    ]
    assert len(metadata) == 1, metadata
    await check_ledger(world, {metadata[0]["name"], f"{cid}-lb-1", f"{cid}-web-1"}, "after create")
    # One job made it (resumed after each kill, never started over): its steps are all done.
    kvs, _ = await world.store.get_prefix(prefix)
    jobs = {kv.key[len(prefix) :].split("/", 1)[0] for kv in kvs}
    assert len(jobs) == 1, sorted(kv.key for kv in kvs)
    assert all(json.loads(kv.value)["status"] == "done" for kv in kvs)
