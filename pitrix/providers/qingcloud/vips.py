"""Reserved addresses on QingCloud: its VIPs (``AllocateVips``, ``DescribeVips``, ``ReleaseVips``).

A VIP is an address of a vxnet that QingCloud keeps out of DHCP; instances announce it themselves
(keepalived). ``AllocateVips`` takes the vxnet (required), ``vip_name`` and ``count`` and answers
the new ids and a job; ``DescribeVips`` lists a vxnet's VIPs (``vxnets.N``, ``vip_name``) as
``vip_set`` entries holding ``vip_id``, ``vip_name``, ``vip_addr`` and ``vxnet_id``;
``ReleaseVips`` takes ``vips.N``. The provider's base vxnet (``vxnet-0``) stands in when the
runtime names no network; real QingCloud wants a private vxnet there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from pitrix.providers.addresses import Address
from pitrix.providers.errors import ProviderError
from pitrix.providers.polling import wait_for
from pitrix.providers.qingcloud.client import QingCloudClient

DEFAULT_VXNET = "vxnet-0"
NOT_FOUND = "2100"
PAGE = 100


def to_address(item: Mapping[str, Any]) -> Address:
    return Address(
        address_id=str(item.get("vip_id", "")),
        name=str(item.get("vip_name") or ""),
        address=str(item.get("vip_addr") or ""),
        network=str(item.get("vxnet_id") or ""),
        raw=dict(item),
    )


class QingCloudVips:
    """The VIP calls of :class:`~pitrix.providers.qingcloud.provider.QingCloudProvider` (a mixin:
    it uses the provider's client, job waiter and poll)."""

    _client: QingCloudClient
    _log: structlog.typing.FilteringBoundLogger
    job_timeout: float

    async def wait_jobs(self, job_ids: list[str], timeout: float) -> None: ...  # the provider's

    async def _vips(self, network: str, name: str = "") -> list[Address]:
        """Every page of DescribeVips for the vxnet (``vip_name`` narrows it; matched exactly here)."""
        params: dict[str, object] = {"vxnets.1": network or DEFAULT_VXNET}
        if name:
            params["vip_name"] = name
        found: list[Address] = []
        offset = 0
        while True:
            reply = await self._client.call("DescribeVips", {**params, "offset": offset, "limit": PAGE})
            page = reply.get("vip_set") or []
            found.extend(to_address(item) for item in page)
            offset += len(page)
            if not page or offset >= int(reply.get("total_count", 0)):
                break
        return [a for a in found if not name or a.name == name]

    async def find_address(self, name: str, network: str) -> Address | None:
        found = await self._vips(network, name)
        return found[0] if found else None

    async def allocate_address(self, name: str, network: str, tags: Mapping[str, str]) -> Address:
        """AllocateVips of one, its job waited for, then described until it shows its address.
        Not repeated blindly (no client token): an ambiguous failure goes back to the step, which
        looks the name up first. QingCloud's VIPs take no tags; the name is the lookup key."""
        vxnet = network or DEFAULT_VXNET
        reply = await self._client.call(
            "AllocateVips", {"vxnet_id": vxnet, "vip_name": name, "count": 1}, idempotent=False
        )
        ids = reply.get("vips") or []
        if len(ids) != 1:
            raise ProviderError(f"qingcloud AllocateVips {name}: expected one VIP, got {ids!r}")
        vip_id = str(ids[0])
        if reply.get("job_id"):
            await self.wait_jobs([str(reply["job_id"])], self.job_timeout)
        shown: list[Address] = []

        async def addressed() -> bool | None:
            shown[:] = [a for a in await self._vips(vxnet, name) if a.address_id == vip_id]
            return True if shown and shown[0].address else None

        await wait_for(addressed, timeout=self.job_timeout, what=f"qingcloud: VIP {vip_id}")
        self._log.info("qingcloud.vip_allocated", vip_id=vip_id, name=name, address=shown[0].address)
        return shown[0]

    async def release_address(self, address_id: str) -> None:
        """ReleaseVips of one; a VIP already gone (2100) counts as released."""
        try:
            reply = await self._client.call("ReleaseVips", {"vips.1": address_id}, idempotent=False)
        except ProviderError as exc:
            if exc.code == NOT_FOUND:
                return
            raise
        if reply.get("job_id"):
            await self.wait_jobs([str(reply["job_id"])], self.job_timeout)
        self._log.info("qingcloud.vip_released", vip_id=address_id)
