"""Links and deletes racing across replicas: a delete never lands under a link made meanwhile.

Two replicas on one etcd. The delete's link check (its action's ``recheck``) runs on a fresh
read of its cluster; a create linking to that cluster lands between the check and the delete's
transaction (the check is held open for it). The create rewrote its target's record in its own
transaction, so the delete's guard fails: it is refused as a concurrent change, changes nothing,
and when asked again sees the new link. The other order: a target deleted after a create checked
it fails the create (its guard fails and it looks again), while a target that only moved on (its
own job wrote its record) is linked on the second look.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from dead_cloud import DEAD_CLOUD

from pitrix.runtime.actions import BY_NAME
from pitrix.runtime.actions import create as create_action
from pitrix.runtime.keys import cluster_key
from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.records import Cluster
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.service import InvalidRequest, RuntimeService
from pitrix.sealing import Sealer
from pitrix.store import Store

APP = {"name": "demo", "version": "1.0", "roles": [{"name": "web", "count": 1, "image": "demo"}]}
QUICK = RetryPolicy(attempts=1, first_delay=0.0, max_delay=0.0)


@pytest.fixture
async def replicas(store: Store) -> AsyncIterator[tuple[RuntimeService, RuntimeService]]:
    sealer = Sealer.generate()  # replicas on one etcd share the key
    services = [
        RuntimeService(store, RecoveryPolicy(enabled=False), sealer=sealer, replica=name, retry=QUICK)
        for name in ("r1", "r2")
    ]
    for service in services:
        await service.start()
    try:
        await services[0].put_runtime(DEAD_CLOUD)
        yield services[0], services[1]
    finally:
        for service in services:
            await service.stop()


async def failed(service: RuntimeService, cid: str) -> None:
    async def ended(cluster: Cluster) -> bool:
        return cluster.state == "failed"

    await service.wait(cid, ended, 60)


@dataclass
class Held:
    """A method of one replica held open after it ran: ``reached`` is set then, ``go_on`` lets it return."""

    reached: asyncio.Event
    go_on: asyncio.Event


def hold_after(monkeypatch: pytest.MonkeyPatch, holder: object, name: str) -> Held:
    held = Held(asyncio.Event(), asyncio.Event())
    original = getattr(holder, name)

    async def held_open(*args: Any) -> Any:
        result = await original(*args)  # the check itself runs and passes
        held.reached.set()
        await held.go_on.wait()
        return result

    monkeypatch.setattr(holder, name, held_open)
    return held


async def test_a_link_made_during_a_delete_fails_the_delete(
    replicas: tuple[RuntimeService, RuntimeService], monkeypatch: pytest.MonkeyPatch
) -> None:
    deleter, creator = replicas
    target, _ = await deleter.create_cluster(owner="o", runtime="dead", app=APP)
    await failed(deleter, target.id)

    delete = BY_NAME["delete"]
    held = hold_after(monkeypatch, delete, "recheck")  # no link yet: the check passes
    deleting = asyncio.create_task(deleter.delete_cluster(target.id))
    await asyncio.wait_for(held.reached.wait(), 30)
    linker, _ = await creator.create_cluster(owner="o", runtime="dead", app=APP, links={"db": target.id})
    held.go_on.set()
    with pytest.raises(LifecycleError, match="changed meanwhile"):
        await deleting
    assert (await deleter.get_cluster(target.id)).state == "failed"  # nothing changed

    monkeypatch.undo()
    with pytest.raises(LifecycleError, match=f"linked to by {linker.id} \\(links.db\\)"):
        await deleter.delete_cluster(target.id)


async def test_a_target_deleted_after_the_link_check_fails_the_create(
    replicas: tuple[RuntimeService, RuntimeService], monkeypatch: pytest.MonkeyPatch
) -> None:
    deleter, creator = replicas
    target, _ = await deleter.create_cluster(owner="o", runtime="dead", app=APP)
    await failed(deleter, target.id)
    before = len(await creator.list_clusters())

    held = hold_after(monkeypatch, create_action, "check_links")
    creating = asyncio.create_task(
        creator.create_cluster(owner="o", runtime="dead", app=APP, links={"db": target.id})
    )
    await asyncio.wait_for(held.reached.wait(), 30)
    await deleter.delete_cluster(target.id)
    held.go_on.set()
    with pytest.raises(InvalidRequest, match=f"links.db: cluster {target.id} is deleting"):
        await creating  # its guard failed, and the second look found the delete
    assert len(await creator.list_clusters()) == before  # no linking cluster was made
    with pytest.raises(InvalidRequest):
        await creator.create_cluster(owner="o", runtime="dead", app=APP, links={"db": target.id})


async def test_a_target_that_moved_on_after_the_link_check_is_linked_on_a_second_look(
    replicas: tuple[RuntimeService, RuntimeService], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, creator = replicas
    target, _ = await writer.create_cluster(owner="o", runtime="dead", app=APP)
    await failed(writer, target.id)

    held = hold_after(monkeypatch, create_action, "check_links")
    creating = asyncio.create_task(
        creator.create_cluster(owner="o", runtime="dead", app=APP, links={"db": target.id})
    )
    await asyncio.wait_for(held.reached.wait(), 30)
    # The target's record is written between the check and the create's transaction, as a busy
    # cluster's own job writes it: the guard fails, but nothing about the link changed.
    kv = await writer.store.get(cluster_key(target.id))
    assert kv is not None
    await writer.store.put(cluster_key(target.id), kv.value)
    held.go_on.set()
    linker, _ = await asyncio.wait_for(creating, 30)
    assert linker.links == {"db": target.id}
