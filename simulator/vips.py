"""Simulated VIPs: addresses of the simulated network kept for whoever asked, given to no VM.

A VIP takes its address from the same pool as the VMs (``AddressPool``), so no VM is ever given
a reserved address and a released one goes back to the pool. Nothing listens on a VIP here: as
on QingCloud, an app announces it on one of its nodes itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from simulator.errors import BAD_STATUS, NOT_FOUND, ApiError, invalid
from simulator.jobs import resource_id
from simulator.network import AddressPool, NetworkError
from simulator.vm import now_iso


@dataclass
class Vip:
    vip_id: str
    vip_name: str
    vip_addr: str
    vxnet_id: str
    create_time: str = field(default_factory=now_iso)

    def describe(self) -> dict[str, Any]:
        return {
            "vip_id": self.vip_id,
            "vip_name": self.vip_name,
            "vip_addr": self.vip_addr,
            "vxnet_id": self.vxnet_id,
            "instance_id": "",
            "nic_id": "",
            "create_time": self.create_time,
            "description": "",
            "owner": "usr-simulator",
        }


class Vips:
    """Every VIP of one simulated cloud, in allocation order."""

    def __init__(self, pool: AddressPool) -> None:
        self._pool = pool
        self._vips: dict[str, Vip] = {}

    def allocate(self, vxnet_id: str, name: str, count: int, addresses: list[str]) -> list[str]:
        """``count`` new VIPs (or one per address in ``addresses``); an address already held by a
        VIP or a VM is refused, as is one outside the network, and nothing is allocated then."""
        taken: list[str] = []
        try:
            if addresses:
                for addr in addresses:
                    taken.append(self._claim(addr))
            else:
                for _ in range(count):
                    taken.append(self._pool.allocate())
        except NetworkError as exc:
            for addr in taken:
                self._pool.release(addr)
            raise ApiError(BAD_STATUS, f"ResourceStatusError, {exc}") from None
        except ApiError:
            for addr in taken:
                self._pool.release(addr)
            raise
        ids = []
        for addr in taken:
            vip = Vip(resource_id("vip"), name, addr, vxnet_id)
            self._vips[vip.vip_id] = vip
            ids.append(vip.vip_id)
        return ids

    def _claim(self, addr: str) -> str:
        try:
            wanted = ipaddress.IPv4Address(addr)
        except ValueError:
            raise invalid(f"parameter [vip_addrs] [{addr}] is not an IPv4 address") from None
        if wanted not in self._pool.network or str(wanted) == self._pool.gateway:
            raise invalid(f"parameter [vip_addrs] [{addr}] is not a free address of {self._pool.network}")
        if not self._pool.claim(str(wanted)):
            raise ApiError(BAD_STATUS, f"ResourceStatusError, address [{addr}] is already in use")
        return str(wanted)

    def describe(
        self, *, vxnets: list[str], vip_ids: list[str], name: str, addresses: list[str]
    ) -> list[Vip]:
        return [
            v
            for v in self._vips.values()
            if v.vxnet_id in vxnets
            and (not vip_ids or v.vip_id in vip_ids)
            and (not addresses or v.vip_addr in addresses)
            and name in v.vip_name
        ]

    def release(self, vip_ids: list[str]) -> None:
        """Every id must exist (2100 naming the first that does not; nothing released then)."""
        missing = [v for v in vip_ids if v not in self._vips]
        if missing:
            raise ApiError(NOT_FOUND, f"ResourceNotFound, resource [{missing[0]}] not found")
        for vip_id in vip_ids:
            self._pool.release(self._vips.pop(vip_id).vip_addr)

    def all(self) -> list[Vip]:
        return list(self._vips.values())
