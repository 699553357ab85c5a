"""Reserved addresses on OpenStack: a Neutron port with no device, named ``<cluster_id>-vip-<name>``.

Neutron gives a port's fixed IP to nobody else while the port exists, which is what a reserved
address is. The app announces the address itself (keepalived); on a real cloud its nodes' ports
also need the address in their ``allowed_address_pairs`` for the traffic to pass port security,
which pitrix does not set. The network is the runtime's (``network``): Neutron needs one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from openstack import exceptions as sdk_exceptions
from openstack.connection import Connection

from pitrix.providers.addresses import Address
from pitrix.providers.errors import ProviderError

T = TypeVar("T")


def to_address(doc: Mapping[str, Any]) -> Address:
    fixed = [f for f in doc.get("fixed_ips") or [] if isinstance(f, dict) and f.get("ip_address")]
    v4 = [str(f["ip_address"]) for f in fixed if "." in str(f["ip_address"])]
    return Address(
        address_id=str(doc.get("id", "")),
        name=str(doc.get("name") or ""),
        address=v4[0] if v4 else "",
        network=str(doc.get("network_id") or ""),
        raw=dict(doc),
    )


class OpenStackPorts:
    """The port calls of :class:`~pitrix.providers.openstack.provider.OpenStackProvider` (a mixin:
    it uses the provider's SDK connection and retries)."""

    network: str

    async def _sdk(self, action: str, work: Callable[[Connection], T], *, idempotent: bool = True) -> T:
        raise NotImplementedError  # the provider's own, which comes first in its class's order

    def _port_network(self, network: str) -> str:
        chosen = network or self.network
        if not chosen:
            raise ProviderError(
                "openstack: a reserved address needs a network: set the runtime's network", code="config"
            )
        return chosen

    async def find_address(self, name: str, network: str) -> Address | None:
        query = {"name": name, "network_id": self._port_network(network)}

        def work(conn: Connection) -> list[dict[str, Any]]:
            response = conn.network.get("/ports", params=query)
            sdk_exceptions.raise_from_response(response)
            return list(response.json().get("ports") or [])

        found = [to_address(p) for p in await self._sdk("list ports", work) if p.get("name") == name]
        return found[0] if found else None

    async def allocate_address(self, name: str, network: str, tags: Mapping[str, str]) -> Address:
        """One port with a fixed IP Neutron picks. Not repeated blindly: the step looks first."""
        body = {"port": {"network_id": self._port_network(network), "name": name, "admin_state_up": True}}

        def work(conn: Connection) -> dict[str, Any]:
            response = conn.network.post("/ports", json=body)
            sdk_exceptions.raise_from_response(response)
            return dict(response.json()["port"])

        address = to_address(await self._sdk("create port", work, idempotent=False))
        if not address.address:
            raise ProviderError(f"openstack: port {address.address_id} ({name}) has no IPv4 fixed IP")
        return address

    async def release_address(self, address_id: str) -> None:
        """Delete the port; one already gone (404) counts as released."""

        def work(conn: Connection) -> None:
            response = conn.network.delete(f"/ports/{quote(address_id, safe='')}")
            if response.status_code != 404:
                sdk_exceptions.raise_from_response(response)

        await self._sdk("delete port", work)
