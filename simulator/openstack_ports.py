"""The OpenStack face's network part: Neutron v2.0 ports, only as reserved addresses use them.

A port made with no device holds a fixed IP of its network that Neutron gives to nobody else,
which is what pitrix's reserved addresses are on OpenStack (the app announces the address with
keepalived; on a real cloud the nodes' ports also need it in ``allowed_address_pairs``). The
fixed IPs come from the simulated network's pool, as VMs' and QingCloud VIPs' addresses do.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator.network import NetworkError
from simulator.vm import now_iso

if TYPE_CHECKING:
    from simulator.openstack_api import OpenStackApi


@dataclass
class Port:
    port_id: str
    name: str
    network_id: str
    ip_address: str
    project_id: str
    created_at: str = field(default_factory=now_iso)

    def doc(self) -> dict[str, Any]:
        return {
            "id": self.port_id,
            "name": self.name,
            "network_id": self.network_id,
            "tenant_id": self.project_id,
            "project_id": self.project_id,
            "fixed_ips": [
                {
                    "subnet_id": uuid.uuid5(uuid.NAMESPACE_URL, self.network_id).hex,
                    "ip_address": self.ip_address,
                }
            ],
            "status": "DOWN",
            "admin_state_up": True,
            "device_id": "",
            "device_owner": "",
            "allowed_address_pairs": [],
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }


def _neutron_error(status: int, kind: str, message: str) -> web.Response:
    body = {"NeutronError": {"type": kind, "message": message, "detail": ""}}
    return web.json_response(body, status=status)


class OpenStackPorts:
    """Routes and handlers; authentication comes from the ``OpenStackApi``."""

    def __init__(self, api: OpenStackApi) -> None:
        self.api = api
        self.pool = api.fleet.pool
        self._ports: dict[str, Port] = {}

    def routes(self) -> list[web.RouteDef]:
        a = self.api._authed
        return [
            web.get("/network", self.versions),
            web.get("/network/", self.versions),
            web.get("/network/v2.0", self.version),
            web.get("/network/v2.0/", self.version),
            web.get("/network/v2.0/ports", a(self.list_ports)),
            web.post("/network/v2.0/ports", a(self.create_port)),
            web.get("/network/v2.0/ports/{port_id}", a(self.get_port)),
            web.delete("/network/v2.0/ports/{port_id}", a(self.delete_port)),
        ]

    def _doc(self, request: web.Request) -> dict[str, Any]:
        href = f"{request.scheme}://{request.host}/network/v2.0/"
        return {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}

    async def versions(self, request: web.Request) -> web.Response:
        return web.json_response({"versions": [self._doc(request)]})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self._doc(request)})

    async def list_ports(self, request: web.Request) -> web.Response:
        query = request.query
        found = [
            p
            for p in self._ports.values()
            if all(
                query.get(key) is None or query.get(key) == value
                for key, value in (("name", p.name), ("network_id", p.network_id), ("id", p.port_id))
            )
        ]
        return web.json_response({"ports": [p.doc() for p in found]})

    async def create_port(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _neutron_error(400, "HTTPBadRequest", "Malformed request body")
        spec = body.get("port") if isinstance(body, dict) else None
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("network_id"), str)
            or not spec["network_id"]
        ):
            return _neutron_error(400, "HTTPBadRequest", "Invalid input: 'network_id' is a required property")
        wanted = [
            f.get("ip_address")
            for f in spec.get("fixed_ips") or []
            if isinstance(f, dict) and f.get("ip_address")
        ]
        if len(wanted) > 1:
            return _neutron_error(400, "HTTPBadRequest", "Invalid input: one fixed IP per port here")
        if wanted:
            try:
                address = str(ipaddress.IPv4Address(str(wanted[0])))
            except ValueError:
                return _neutron_error(
                    400, "InvalidInput", f"Invalid input: {wanted[0]!r} is not an IPv4 address"
                )
            if not self.pool.claim(address):
                return _neutron_error(
                    409, "IpAddressAlreadyAllocated", f"IP address {address} already allocated in subnet"
                )
        else:
            try:
                address = self.pool.allocate()
            except NetworkError as exc:
                return _neutron_error(409, "IpAddressGenerationFailure", str(exc))
        port = Port(
            port_id=str(uuid.uuid4()),
            name=str(spec.get("name") or ""),
            network_id=spec["network_id"],
            ip_address=address,
            project_id=str(spec.get("project_id") or ""),
        )
        self._ports[port.port_id] = port
        return web.json_response({"port": port.doc()}, status=201)

    async def get_port(self, request: web.Request) -> web.Response:
        port = self._ports.get(request.match_info["port_id"])
        if port is None:
            return _neutron_error(
                404, "PortNotFound", f"Port {request.match_info['port_id']} could not be found."
            )
        return web.json_response({"port": port.doc()})

    async def delete_port(self, request: web.Request) -> web.Response:
        port = self._ports.pop(request.match_info["port_id"], None)
        if port is None:
            return _neutron_error(
                404, "PortNotFound", f"Port {request.match_info['port_id']} could not be found."
            )
        self.pool.release(port.ip_address)
        return web.Response(status=204)
