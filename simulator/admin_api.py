"""The simulator's own endpoints under ``/_sim/``: the ledger, health, consoles and fault injection.

They are not part of any cloud's API and are unauthenticated: the simulator listens on loopback
only, and these exist for the tests, the demo and leak checks run by the same user. Bad input is
HTTP 400 with ``{"error": "<field>: ..."}``; an unknown instance 404; a VM in the wrong state 409.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from simulator.errors import NOT_FOUND, ApiError
from simulator.faults import SERVER_ERROR, Faults
from simulator.fleet import Fleet

Handler = Callable[[web.Request], Awaitable[web.Response]]


class BadRequest(ValueError):
    """A field of an admin request is missing or wrong; the message names it."""


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(f"{name}: must be a number")
    return float(value)


def _count(body: dict[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"{name}: must be a whole number >= 0")
    return value


def _positive_int(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadRequest(f"{name}: must be a positive integer")
    return value


def _action(body: dict[str, Any]) -> str:
    action = body.get("action")
    if not isinstance(action, str) or not action:
        raise BadRequest("action: a QingCloud action name or '*' is required")
    return action


def _guarded(handler: Handler) -> Handler:
    """Turn the errors of an admin call into its documented answers."""

    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except ValueError as exc:  # a fault setter refusing a value; its message names the field
            return web.json_response({"error": str(exc)}, status=400)
        except ApiError as exc:
            status = 404 if exc.ret_code == NOT_FOUND else 409
            return web.json_response({"error": exc.message, "ret_code": exc.ret_code}, status=status)

    return guarded


async def _body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        return {}
    try:
        body = json.loads(text)
    except ValueError:
        raise BadRequest("body: not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body: expected a JSON object")
    return body


class AdminApi:
    def __init__(self, fleet: Fleet, faults: Faults) -> None:
        self._fleet = fleet
        self._faults = faults

    def routes(self) -> list[web.RouteDef]:
        g = _guarded
        return [
            web.get("/_sim/healthz", self.healthz),
            web.get("/_sim/ledger", self.ledger),
            web.get("/_sim/faults", g(self.show_faults)),
            web.post("/_sim/faults", g(self.add_fault)),
            web.delete("/_sim/faults", g(self.clear_faults)),
            web.put("/_sim/faults/rates", g(self.set_rates)),
            web.put("/_sim/faults/boot", g(self.set_boot)),
            web.get("/_sim/instances/{iid}/console", g(self.console)),
            web.post("/_sim/instances/{iid}/crash", g(self.crash)),
            web.post("/_sim/instances/{iid}/cut", g(self.cut)),
            web.post("/_sim/instances/{iid}/heal", g(self.heal)),
            web.put("/_sim/instances/{iid}/slow", g(self.slow)),
            web.get("/_sim/light-workers", self.light_workers),
            web.get("/_sim/vxnets", self.vxnets),
            web.post("/_sim/vxnets", g(self.add_vxnet)),
            web.put("/_sim/quotas", g(self.set_quotas)),
        ]

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def ledger(self, request: web.Request) -> web.Response:
        """Every VM and volume ever created, terminated and deleted ones included: what leak checks
        compare against."""
        entries = self._fleet.ledger()
        return web.json_response(
            {
                "instances": entries,
                "total_count": len(entries),
                "volumes": self._fleet.volume_ledger(),
                "snapshots": self._fleet.snapshot_ledger(),
            }
        )

    async def show_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._faults.describe())

    async def add_fault(self, request: web.Request) -> web.Response:
        """``{"action": "RunInstances" | "*", "ret_code": 1500, "times": 1, "message": ""}``."""
        body = await _body(request)
        action = _action(body)
        ret_code = _positive_int(body, "ret_code", 1500)
        times = _positive_int(body, "times", 1)
        message = body.get("message", "")
        if not isinstance(message, str):
            raise BadRequest("message: must be a string")
        self._faults.inject(action, ret_code, times=times, message=message)
        return web.json_response({"ok": True}, status=201)

    async def set_rates(self, request: web.Request) -> web.Response:
        """``{"action": "RunInstances" | "*", "error": 0.1, "throttle": 0.2, "ret_code": 5000}``."""
        body = await _body(request)
        self._faults.set_rates(
            _action(body),
            error=_number(body, "error", 0.0),
            throttle=_number(body, "throttle", 0.0),
            ret_code=_positive_int(body, "ret_code", SERVER_ERROR),
        )
        return web.json_response({"ok": True, **self._faults.describe()})

    async def set_boot(self, request: web.Request) -> web.Response:
        """``{"delay_min": 0.5, "delay_max": 2.0, "failure_rate": 0.1, "fail_next": 1}`` (absent: 0)."""
        body = await _body(request)
        self._faults.set_boot(
            delay_min=_number(body, "delay_min", 0.0),
            delay_max=_number(body, "delay_max", 0.0),
            failure_rate=_number(body, "failure_rate", 0.0),
            fail_next=_count(body, "fail_next"),
        )
        return web.json_response({"ok": True, **self._faults.describe()})

    async def clear_faults(self, request: web.Request) -> web.Response:
        """Clear the API and boot faults (faults on VMs are undone per VM: heal, slow 0, restart)."""
        self._faults.clear()
        return web.json_response({"ok": True})

    async def console(self, request: web.Request) -> web.Response:
        """``{"instance_id", "output", "ssh_host_key", "ssh_port"}``: what a client pins."""
        return web.json_response(self._fleet.console(request.match_info["iid"]))

    async def crash(self, request: web.Request) -> web.Response:
        killed = await self._fleet.crash(request.match_info["iid"])
        return web.json_response({"ok": True, "processes": killed})

    async def cut(self, request: web.Request) -> web.Response:
        frozen = await self._fleet.cut(request.match_info["iid"])
        return web.json_response({"ok": True, "agents": frozen})

    async def heal(self, request: web.Request) -> web.Response:
        thawed = await self._fleet.heal(request.match_info["iid"])
        return web.json_response({"ok": True, "agents": thawed})

    async def slow(self, request: web.Request) -> web.Response:
        """``{"seconds": 2.5}``: every later SSH command of the VM waits that long first."""
        body = await _body(request)
        if "seconds" not in body:
            raise BadRequest("seconds: required")
        self._fleet.slow(request.match_info["iid"], _number(body, "seconds", 0.0))
        return web.json_response({"ok": True})

    async def light_workers(self, request: web.Request) -> web.Response:
        """``{"workers": [{"index", "pid", "alive", "exit_status", "error", "vms"}]}`` (empty
        without ``--light-workers``): where the light VMs run, and a dead worker's report."""
        return web.json_response({"workers": self._fleet.light_worker_status()})

    async def vxnets(self, request: web.Request) -> web.Response:
        """``{"vxnets": [{"vxnet_id", "vxnet_name", "vxnet_type"}]}``: what RunInstances accepts."""
        return web.json_response({"vxnets": [v.describe() for v in self._fleet.vxnets.describe([])]})

    async def add_vxnet(self, request: web.Request) -> web.Response:
        """``{"vxnet_id": "vxnet-<a-z0-9>", "name": "..."}``: a network RunInstances then accepts
        (made again: the same answer)."""
        body = await _body(request)
        vxnet_id = body.get("vxnet_id")
        name = body.get("name", "")
        if not isinstance(vxnet_id, str) or not vxnet_id:
            raise BadRequest("vxnet_id: required")
        if not isinstance(name, str):
            raise BadRequest("name: must be a string")
        return web.json_response(self._fleet.vxnets.create(vxnet_id, name).describe(), status=201)

    async def set_quotas(self, request: web.Request) -> web.Response:
        """``{"instance": N | null}``: how many live instances RunInstances allows (2600 beyond)."""
        body = await _body(request)
        if "instance" in body:
            self._fleet.quotas.set_instance(body["instance"])
        return web.json_response({"instance": self._fleet.quotas.instance})
