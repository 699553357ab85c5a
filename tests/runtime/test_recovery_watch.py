"""The recovery monitor's watch: a monitor that starts before metad's replay has filled its view
suspects nobody for it (a "nodes silent" warning after every job was that), and still finds a
node that really went silent."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from structlog.testing import capture_logs

from pitrix.metad import keyspace
from pitrix.metad.client import MetadManagementClient
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.records import Node
from pitrix.runtime.recovery import RecoveryPolicy, watch_for_dead_nodes

CID = "cl-watch"
NODES = [
    Node(node_id=f"web-{i}", role="web", index=i, name=f"{CID}-web-{i}", instance_id=f"i-{i}")
    for i in (1, 2, 3)
]


def heartbeat(iid: str, revision: int, *, gone: bool = False) -> dict[str, Any]:
    """One event of metad's status stream, as its watch delivers it."""
    key = keyspace.instance_status(CID, iid, keyspace.HEARTBEAT)
    return {"type": "delete" if gone else "put", "key": key, "value": "1", "revision": revision}


async def test_a_monitor_started_before_the_replay_warns_only_of_the_node_that_went_silent() -> None:
    # Not started: fed by hand with the events metad's replay and stream would bring.
    agents = AgentStatus(cast(MetadManagementClient, None), CID)
    asked = asyncio.Event()

    async def nodes() -> list[Node]:
        asked.set()
        return NODES

    with capture_logs() as logs:
        watch = asyncio.create_task(watch_for_dead_nodes(agents, nodes, RecoveryPolicy(grace=0.3), CID))
        await asyncio.wait_for(asked.wait(), 10)  # the monitor is up, its view still empty
        for revision, node in enumerate(NODES, start=1):
            await agents._apply(heartbeat(node.instance_id, revision))  # the replay arrives
        await agents._apply(heartbeat("i-2", 10, gone=True))  # web-2's lease runs out
        dead = await asyncio.wait_for(watch, 10)
    assert [n.node_id for n in dead] == ["web-2"]
    suspected = [e["nodes"] for e in logs if e["event"] == "nodes silent"]
    assert suspected == [["web-2"]], suspected


async def test_a_resync_is_swapped_in_whole_so_no_waiter_sees_every_node_silent() -> None:
    agents = AgentStatus(cast(MetadManagementClient, None), CID)
    for revision, node in enumerate(NODES, start=1):
        await agents._apply(heartbeat(node.instance_id, revision))
    seen_silent = asyncio.create_task(
        agents.wait_for(lambda view: any("heartbeat" not in view.get(n.instance_id, {}) for n in NODES), 30)
    )
    await asyncio.sleep(0)  # the waiter is waiting
    # metad compacted past us: its resync brings the whole state again, one event at a time.
    await agents._apply({"type": "resync", "revision": 20, "count": len(NODES)})
    for node in NODES:
        await asyncio.sleep(0)  # events arrive one by one; waiters run in between
        await agents._apply(heartbeat(node.instance_id, 20))
    await asyncio.sleep(0)
    assert not seen_silent.done(), "a waiter saw the view emptied by the resync"
    assert agents.revisions["i-3"]["heartbeat"] == 20
    await agents._apply(heartbeat("i-1", 21, gone=True))
    await asyncio.wait_for(seen_silent, 10)  # a real silence still wakes it
