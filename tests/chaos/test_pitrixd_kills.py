"""pitrixd SIGKILLed at random moments during concurrent deploys, scales and deletes.

Each cluster has a story: stay as created, scale its role out, scale it in, or be deleted. While
the stories run, pitrixd is killed at random moments and restarted on its state dir. Every cluster
must reach its target, and the simulator's ledger must show no VM leaked and none created twice.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from chaos_ops import Driver, Tally, leaks_and_duplicates

from bench.stack import TRIVIAL_APP, Stack

pytestmark = pytest.mark.timeout(1200)  # the long form; the short one ends in well under a minute

APP: dict[str, Any] = copy.deepcopy(TRIVIAL_APP)
APP["roles"][0]["count"] = 2
ROLE = "node"
# story → (target state, node count at the end)
STORIES = {"keep": ("active", 2), "out": ("active", 3), "in": ("active", 1), "delete": ("deleted", 0)}


async def live_story(driver: Driver, story: str, i: int) -> tuple[str, bool]:
    cid = await driver.create(APP, f"chaos-{story}-{i}")
    if not await driver.reach(cid, "active", ROLE, 2):
        return cid, False
    state, count = STORIES[story]
    if state == "deleted":
        return cid, await driver.reach(cid, "deleted")
    return cid, await driver.reach(cid, "active", ROLE, count)


async def test_pitrixd_killed_at_random_moments(stack: Stack, long_form: bool) -> None:
    clusters, kills = (50, 20) if long_form else (4, 3)
    tally = Tally()
    driver = Driver(stack, tally)
    stories = [list(STORIES)[i % len(STORIES)] for i in range(clusters)]
    done = asyncio.Event()
    killer = asyncio.create_task(driver.killer(kills, done, 0.5, 6.0 if long_form else 3.0))
    try:
        async with asyncio.timeout(900 if long_form else 240):
            results = await asyncio.gather(*(live_story(driver, s, i) for i, s in enumerate(stories)))
    finally:
        done.set()
        await killer

    views = [await driver.call("GET", f"/v1/clusters/{cid}") for cid, _ok in results]
    kept = {n["instance_id"] for v in views if v["state"] != "deleted" for n in v.get("nodes", [])}
    ledger = await stack.ledger()
    leaked, duplicated = leaks_and_duplicates(ledger, kept, metadata_alive=bool(kept))
    missed = [(cid, s) for (cid, ok), s in zip(results, stories, strict=True) if not ok]
    lost = len(missed) + len(leaked) + sum(n - 1 for n in duplicated.values())
    print(
        "\n"
        + tally.line("pitrixd-kills", tally.kills, lost)
        + f" clusters={clusters} vms_created={len(ledger)}"
    )
    assert not missed, f"clusters that did not reach their target: {missed}; errors: {tally.errors}"
    assert not leaked, f"VMs leaked: {leaked}"
    assert not duplicated, f"VMs created twice: {duplicated}"
    for view, story in zip(views, stories, strict=True):
        state, count = STORIES[story]
        assert view["state"] == state, (view["id"], story, view["state"])
        if state != "deleted":
            assert len(view["nodes"]) == count, (view["id"], story, view["nodes"])
