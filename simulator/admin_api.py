"""The simulator's own endpoints under ``/_sim/``: the ledger, health, and fault injection.

They are not part of any cloud's API and are unauthenticated: the simulator listens on loopback
only, and these exist for the tests, the demo and leak checks run by the same user.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from simulator.faults import Faults


class AdminApi:
    def __init__(self, ledger: Callable[[], list[dict[str, Any]]], faults: Faults) -> None:
        self._ledger = ledger
        self._faults = faults

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_sim/healthz", self.healthz),
            web.get("/_sim/ledger", self.ledger),
            web.post("/_sim/faults", self.add_fault),
            web.delete("/_sim/faults", self.clear_faults),
        ]

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def ledger(self, request: web.Request) -> web.Response:
        """Every VM ever created, terminated ones included: what leak checks compare against."""
        entries = self._ledger()
        return web.json_response({"instances": entries, "total_count": len(entries)})

    async def add_fault(self, request: web.Request) -> web.Response:
        """``{"action": "RunInstances" | "*", "ret_code": 1500, "times": 1, "message": ""}``."""
        try:
            body = json.loads(await request.text())
        except ValueError:
            return _bad("body: not JSON")
        if not isinstance(body, dict):
            return _bad("body: expected a JSON object")
        action, ret_code = body.get("action"), body.get("ret_code", 1500)
        times, message = body.get("times", 1), body.get("message", "")
        if not isinstance(action, str) or not action:
            return _bad("action: a QingCloud action name or '*' is required")
        if not isinstance(ret_code, int) or isinstance(ret_code, bool) or ret_code <= 0:
            return _bad("ret_code: must be a positive integer")
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            return _bad("times: must be a positive integer")
        if not isinstance(message, str):
            return _bad("message: must be a string")
        self._faults.inject(action, ret_code, times=times, message=message)
        return web.json_response({"ok": True}, status=201)

    async def clear_faults(self, request: web.Request) -> web.Response:
        self._faults.clear()
        return web.json_response({"ok": True})


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)
