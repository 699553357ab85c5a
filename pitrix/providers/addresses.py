"""Reserved addresses (AppCenter's ``reserved_ips``, QingCloud's VIPs): an optional part of the
provider interface.

A reserved address is an address of the cluster's network that the cloud keeps for the cluster
without giving it to an instance; the app moves it between its nodes itself (keepalived and the
like). A provider offers them by having the three methods of :class:`ReservedAddresses`; one
without them is refused before anything is created (:func:`reserved_addresses` raises
:class:`NoReservedAddresses`, which the create request turns into a 400 naming ``reserved_ips``).

Like instances, a reserved address has a deterministic name (``<cluster_id>-vip-<name>``): it is
looked up by name before one is allocated, so a step repeated after a crash finds its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from pitrix.providers.errors import ProviderError

METHODS = ("allocate_address", "find_address", "release_address")


@dataclass(frozen=True, slots=True)
class Address:
    """One reserved address as the cloud shows it."""

    address_id: str  # the cloud's id (QingCloud vip-..., an OpenStack port id)
    name: str
    address: str  # the IPv4 address itself
    network: str = ""  # the network it belongs to (vxnet id, network id)
    raw: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class ReservedAddresses(Protocol):
    """What a provider offering reserved addresses has beside :class:`~pitrix.providers.base.Provider`."""

    name: str

    async def allocate_address(self, name: str, network: str, tags: Mapping[str, str]) -> Address:
        """Reserve one free address of ``network`` ("" for the provider's default) named ``name``
        and wait until the cloud shows its address. Not a lookup: the caller looks first."""
        ...

    async def find_address(self, name: str, network: str) -> Address | None:
        """The reserved address named exactly ``name`` in ``network``, if there is one."""
        ...

    async def release_address(self, address_id: str) -> None:
        """Give the address back and wait; an id already gone is skipped (safe to repeat)."""
        ...


class NoReservedAddresses(ProviderError):
    """The provider has no reserved addresses: an app declaring ``reserved_ips`` cannot run on it."""

    def __init__(self, provider: str) -> None:
        super().__init__(f"provider {provider} has no reserved addresses", code="unsupported")
        self.provider = provider


def offers(cls_or_provider: object) -> bool:
    """Whether a provider (or its class) has every method of :class:`ReservedAddresses`."""
    return all(callable(getattr(cls_or_provider, method, None)) for method in METHODS)


def reserved_addresses(provider: object) -> ReservedAddresses:
    """``provider`` as one offering reserved addresses, or :class:`NoReservedAddresses`."""
    if not offers(provider):
        raise NoReservedAddresses(str(getattr(provider, "name", type(provider).__name__)))
    return provider  # type: ignore[return-value]


def provider_offers(provider_name: str) -> bool:
    """Whether the installed provider ``provider_name`` offers reserved addresses, judged from its
    class (``pitrix.providers`` entry point) without building one: a create request is checked
    before the runtime's cloud is reached. An unknown provider offers nothing."""
    for entry in entry_points(group="pitrix.providers"):
        if entry.name == provider_name:
            return offers(entry.load())
    return False
