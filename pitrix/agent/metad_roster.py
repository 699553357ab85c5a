"""The metadata cluster's members as this agent last learned them, kept across restarts.

The agent is deployed with a ``nodes`` list; when pitrixd replaces a metadata member, metad
publishes the new list (``pitrix.metad.roster``) and the agent's client adopts it. A restarted
agent must not fall back to the deployed list, whose lost member may be all it could try, so the
adopted list is saved in the state dir (atomically, 0600) with the deployed list it replaced: a
config deployed since (another list) wins over what was saved.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from pitrix.agent.durable import write_durably
from pitrix.metad import roster

FILE_NAME = "metad-nodes.json"


@dataclass(frozen=True)
class SavedRoster:
    """An adopted list of nodes (in this node's order) and the deployed list it replaced."""

    nodes: list[str]
    configured: list[str]

    def to_json(self) -> bytes:
        doc = {"nodes": self.nodes, "configured": self.configured}
        return json.dumps(doc, indent=1).encode() + b"\n"


def load(path: Path | None, configured: list[str]) -> SavedRoster | None:
    """The saved roster if there is a whole one adopted over ``configured``; None otherwise (no
    file, a damaged one, or one saved under another deployed list)."""
    if path is None:
        return None
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("configured") != configured:
        return None
    nodes = doc.get("nodes")
    if not roster.valid(nodes):
        return None
    assert isinstance(nodes, list)
    return SavedRoster(list(nodes), list(configured))


async def save(path: Path, saved: SavedRoster) -> None:
    """Write ``saved`` atomically and durably, readable by the agent only (off the event loop)."""

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, saved.to_json(), 0o600)

    await asyncio.to_thread(write)
