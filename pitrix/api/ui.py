"""The web console of the admin API: a list of clusters and a page per cluster with its actions.

It is one self-contained page (no build step, nothing fetched from elsewhere), live from the SSE
stream, that only calls the admin API the CLI calls. The state machine it draws (once) is read from
the lifecycle table the actions declare, so the drawing cannot drift from the lifecycle.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from pitrix.runtime.actions import LIFECYCLE

PAGE = Path(__file__).with_name("ui.html")

# Where each state sits in the drawing (column, row); a state added later gets a free row at the end.
LAYOUT = {
    "pending": (0, 1),
    "creating": (1, 1),
    "active": (2, 1),
    "scaling_out": (3, 0),
    "scaling_in": (3, 1),
    "updating": (3, 2),
    "recovering": (3, 3),
    "running_service": (3, 4),
    "restarting": (3, 5),
    "upgrading": (3, 6),
    "backing_up": (3, 7),
    "relinking": (3, 8),
    "resizing": (3, 9),
    "stopping": (2, 3),
    "stopped": (1, 3),
    "starting": (1, 2),
    "deleting": (2, 0),
    "deleted": (1, 0),
    "failed": (0, 3),
}


@functools.cache
def lifecycle_graph() -> dict[str, Any]:
    machine = LIFECYCLE.machine
    edges = sorted(
        {
            (source, transition.dest, trigger)
            for trigger, event in machine.events.items()
            for source, transitions in event.transitions.items()
            for transition in transitions
            if transition.dest is not None
        }
    )
    states = list(machine.states)
    positions = dict(LAYOUT)
    for extra, state in enumerate(s for s in states if s not in positions):
        positions[state] = (extra % 4, 4 + extra // 4)
    return {
        "states": [{"name": s, "col": positions[s][0], "row": positions[s][1]} for s in states],
        "edges": [{"from": a, "to": b, "trigger": t} for a, b, t in edges],
    }


@functools.cache
def _page() -> str:
    return PAGE.read_text().replace("/*GRAPH*/null", json.dumps(lifecycle_graph()))


async def ui_page(request: web.Request) -> web.Response:
    return web.Response(text=_page(), content_type="text/html", headers={"Cache-Control": "no-cache"})
