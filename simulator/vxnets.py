"""The simulator's QingCloud networks (vxnets): the base network ``vxnet-0`` and those made through
the admin API (``POST /_sim/vxnets``) or ``Simulator(vxnets=[...])``.

Every vxnet draws its addresses from the simulator's one loopback pool: what a vxnet changes here is
which ids RunInstances accepts and what DescribeInstances/DescribeVxNets say, not routing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from simulator.errors import NOT_FOUND, ApiError, invalid

BASE = "vxnet-0"
VXNET_ID = re.compile(r"^vxnet-[a-z0-9]{1,16}$")


@dataclass(frozen=True, slots=True)
class VxNet:
    vxnet_id: str
    name: str

    def describe(self) -> dict[str, object]:
        # vxnet_type: 0 the base network (QingCloud's own), 1 a managed private one.
        return {
            "vxnet_id": self.vxnet_id,
            "vxnet_name": self.name,
            "vxnet_type": 0 if self.vxnet_id == BASE else 1,
        }


@dataclass
class VxNetBook:
    _nets: dict[str, VxNet] = field(default_factory=lambda: {BASE: VxNet(BASE, "base")})

    def create(self, vxnet_id: str, name: str = "") -> VxNet:
        """Add a vxnet (or return the one of that id); raises ValueError naming a bad id."""
        if not VXNET_ID.match(vxnet_id):
            raise ValueError(f"vxnet_id: {vxnet_id!r} is not like vxnet-<lowercase letters and digits>")
        return self._nets.setdefault(vxnet_id, VxNet(vxnet_id, name or vxnet_id))

    def get(self, vxnet_id: str) -> VxNet:
        """The vxnet, or QingCloud's refusal of an unknown one (2100, as for any missing resource).
        ``vxnet-abc|192.168.1.2`` (a fixed address in a managed vxnet) is refused: the simulator
        hands out its own addresses."""
        if "|" in vxnet_id:
            raise invalid(f"parameter [vxnets.1] [{vxnet_id}]: a fixed private address is not supported here")
        found = self._nets.get(vxnet_id)
        if found is None:
            raise ApiError(NOT_FOUND, f"ResourceNotFound, resource [{vxnet_id}] not found")
        return found

    def describe(self, vxnet_ids: list[str]) -> list[VxNet]:
        wanted = set(vxnet_ids)
        return [net for net in self._nets.values() if not wanted or net.vxnet_id in wanted]
