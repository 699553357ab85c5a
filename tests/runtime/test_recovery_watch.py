"""The recovery monitor's watch: a monitor that starts before metad's replay has filled its view
suspects nobody for it (a "nodes silent" warning after every job was that), and still finds a
node that really went silent."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from structlog.testing import capture_logs

from pitrix.metad import keyspace
from pitrix.metad.client import MetadManagementClient
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.records import Node
from pitrix.runtime.recovery import DownWhen, RecoveryPolicy, watch_for_dead_nodes
from pitrix.runtime.spec import AppRecovery, parse_spec

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
    suspected = [e["nodes"] for e in logs if e["event"] == "nodes down"]
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


def health(iid: str, revision: int, ok: bool, failures: int) -> dict[str, Any]:
    key = keyspace.instance_status(CID, iid, keyspace.HEALTH)
    value = json.dumps({"ok": ok, "error": "exit status 1: ", "failures": failures})
    return {"type": "put", "key": key, "value": value, "revision": revision}


async def test_health_counts_as_down_only_for_an_app_that_asks_and_only_past_the_threshold() -> None:
    app = parse_spec(
        {
            "name": "kv",
            "roles": [
                {"name": "web", "image": "x", "health_check": {"cmd": "true", "unhealthy_threshold": 3}},
                {"name": "lb", "image": "x"},
            ],
            "recovery": {"on": ["health"]},
        }
    )
    asking, default = DownWhen.of(app), DownWhen.of(app.model_copy(update={"recovery": AppRecovery()}))
    agents = AgentStatus(cast(MetadManagementClient, None), CID)
    for revision, node in enumerate(NODES, start=1):
        await agents._apply(heartbeat(node.instance_id, revision))
    await agents._apply(health("i-1", 10, False, 2))  # never passed yet: not ok, below the threshold
    await agents._apply(health("i-2", 11, False, 3))  # at its threshold: unhealthy
    await agents._apply(health("i-3", 12, True, 2))  # failing, but still ok below it
    assert [n.node_id for n in asking.down(agents, NODES)] == ["web-2"]
    assert default.down(agents, NODES) == []
    # on: [health] only: a silent node is not down for this app; for the default it is
    await agents._apply(heartbeat("i-3", 13, gone=True))
    assert [n.node_id for n in asking.down(agents, NODES)] == ["web-2"]
    assert [n.node_id for n in default.down(agents, NODES)] == ["web-3"]
    # a role without a check is judged by its heartbeat only, whatever its report says
    lb = Node(node_id="lb-1", role="lb", index=1, name=f"{CID}-lb-1", instance_id="i-2")
    assert asking.down(agents, [lb]) == []
