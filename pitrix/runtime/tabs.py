"""An app's ``display_tabs``: a table the app prints on request, run on one node and shown as is.

AppCenter's console shows such tabs (a Kafka package's topics, a database's replication state):
the tab's ``cmd`` runs on one live node of its roles and prints ``{"labels": [...], "data":
[[...], ...]}`` on its standard output. Nothing of the cluster changes, so no job is made: the
command goes through the same path as a service's (metad's ``cmd`` for the node, the agent's
result report), under an id of its own, and the answer waits for the result.

A node has one command slot: a tab is asked only of an ``active`` cluster (no job of its own is
posting commands), and one tab at a time per cluster (the caller holds a lock for it).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from pitrix.metad import keyspace as ks
from pitrix.metad.client import MetadManagementClient
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.fallback import silent_agents
from pitrix.runtime.records import Cluster, Node
from pitrix.runtime.steps.published import stdout_of
from pitrix.runtime.steps.services import ENDED, REPORT_GRACE, exit_message

MAX_ROWS = 10_000


class TabFailed(Exception):
    """The tab's command failed, printed something other than a table, or gave no answer."""


def parse_table(name: str, printed: str) -> dict[str, Any]:
    """``{"labels": [...], "data": [[...], ...]}`` from what the command printed, checked: labels
    are strings, each row a list of at most as many cells as there are labels."""
    try:
        table = json.loads(printed)
    except json.JSONDecodeError as exc:
        shown = printed.strip()[:200]
        raise TabFailed(f"tab {name}: its output is not JSON ({exc.msg}): {shown!r}") from None
    if not isinstance(table, dict) or not isinstance(table.get("labels"), list):
        raise TabFailed(f"tab {name}: printed no {{labels, data}} object")
    labels, data = table["labels"], table.get("data", [])
    if not all(isinstance(label, str) for label in labels):
        raise TabFailed(f"tab {name}: labels must be strings")
    if not isinstance(data, list) or len(data) > MAX_ROWS:
        raise TabFailed(f"tab {name}: data must be a list of at most {MAX_ROWS} rows")
    for number, row in enumerate(data):
        if not isinstance(row, list) or len(row) > len(labels):
            raise TabFailed(f"tab {name}: data row {number} is not a list of at most {len(labels)} cells")
        if any(isinstance(cell, dict | list) for cell in row):
            raise TabFailed(f"tab {name}: data row {number} holds a nested value")
    return {"labels": labels, "data": data}


def runners(cluster: Cluster, name: str, nodes: list[Node]) -> list[Node]:
    """The nodes that may run tab ``name``: of its roles (any role when it names none), placed."""
    roles = cluster.app.display_tabs[name].roles
    return [n for n in nodes if n.instance_id and (roles is None or n.role in roles)]


async def first_live(client: MetadManagementClient, cid: str, nodes: list[Node]) -> Node | None:
    """The first of ``nodes`` whose agent reports, asked of metad now (the agents' view may not
    have replayed yet)."""
    for candidate in nodes:
        if not await silent_agents(client, cid, [candidate.instance_id]):
            return candidate
    return None


async def run_on_node(
    client: MetadManagementClient,
    agents: AgentStatus,
    cid: str,
    node: Node,
    command_id: str,
    cmd: str,
    timeout: float,
) -> dict[str, Any]:
    """Run ``cmd`` once on ``node`` (its command slot, under ``command_id``) and return the agent's
    result record (``status``, ``exit_code``, ``stdout_tail``, ``stderr_tail``...); TimeoutError
    when no result came within ``timeout`` and the report's grace. Used by tabs and node exec/logs.
    """
    await client.post_data(
        ks.cmd(cid, node.instance_id), {"id": command_id, "cmd": cmd, "timeout": str(timeout)}
    )

    def ended(_: Any) -> bool:
        return (agents.command_result(node.instance_id, command_id) or {}).get("status") in ENDED

    await agents.wait_for(ended, timeout + REPORT_GRACE)
    return agents.command_result(node.instance_id, command_id) or {}


async def run_tab(
    client: MetadManagementClient, agents: AgentStatus, cluster: Cluster, name: str, nodes: list[Node]
) -> dict[str, Any]:
    """Run tab ``name`` on the first of ``nodes`` whose agent reports; its table, or TabFailed."""
    tab = cluster.app.display_tabs[name]
    node = await first_live(client, cluster.id, nodes)
    if node is None:
        where = ", ".join(tab.roles or ["the cluster"])
        raise TabFailed(f"tab {name}: no node of {where} has a reporting agent")
    # metad takes ids of letters, digits and . _ : - (at most 128): a tab's name may hold more
    command_id = f"tab-{re.sub(r'[^A-Za-z0-9._:-]', '-', name)[:64]}-{secrets.token_hex(6)}"
    try:
        result = await run_on_node(client, agents, cluster.id, node, command_id, tab.cmd, tab.timeout)
    except TimeoutError:
        raise TabFailed(f"tab {name}: no result from {node.node_id} within {tab.timeout}s") from None
    if result.get("status") != "successful":
        code = result.get("exit_code")
        meaning = exit_message(cluster.app, code)
        tail = " | ".join(str(result.get("output_tail") or "").strip().splitlines()[-3:])
        raise TabFailed(
            f"tab {name} failed on {node.node_id} (exit {code}{': ' + meaning if meaning else ''}): {tail}"
        )
    return {"tab": name, "node": node.node_id, **parse_table(name, stdout_of(result))}
