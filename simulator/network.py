"""Addresses of a simulated network: a loopback block, one address per VM.

The whole of 127/8 is local on Linux, so a VM's address needs no set-up and no root. Addresses are
handed out round-robin from ``.2`` (``.1`` is the gateway) so a just-freed address is the last one to
come back: a stale client of a terminated VM does not reach its successor by accident.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
RESERVED = ipaddress.IPv4Network("127.0.0.0/16")  # 127.0.0.1 and friends belong to the host


# The port a simulator listens on at its network's gateway address (``.1``, which no VM gets)
# for as long as it serves that network: the kernel lets one socket hold it, so a second
# simulator on the same network (two test runs that drew the same block) fails at its start,
# and a simulator that died frees it with its process.
CLAIM_PORT = 29761
# pitrix-sim's exit status when its network is claimed: a caller that drew the network at
# random draws another.
NETWORK_IN_USE_EXIT = 3


class NetworkError(ValueError):
    """A bad network definition, or an exhausted one."""


class NetworkInUse(NetworkError):
    """Another simulator serves this network: two would hand out the same addresses, and each
    one's clients would reach the other's VMs."""


def claim(pool: AddressPool) -> socket.socket:
    """Hold the network for this process (see :data:`CLAIM_PORT`); close the socket to let go.

    Not inherited by the VMs' processes (Python's sockets are not), so a VM outliving its
    simulator holds nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # no SO_REUSEADDR: the kernel refuses a second
    try:
        sock.bind((pool.gateway, CLAIM_PORT))
        sock.listen(1)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise NetworkInUse(
                f"network: {pool.network} is in use by another simulator "
                f"({pool.gateway}:{CLAIM_PORT} is held); choose another network"
            ) from None
        raise NetworkError(f"network: cannot claim {pool.gateway}:{CLAIM_PORT}: {exc.strerror}") from None
    return sock


class AddressPool:
    """Allocation of VM addresses in one network."""

    def __init__(self, cidr: str) -> None:
        try:
            network = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError as exc:
            raise NetworkError(f"network: {cidr!r} is not an IPv4 network ({exc})") from exc
        if not network.subnet_of(LOOPBACK) or network.overlaps(RESERVED):
            raise NetworkError(f"network: {cidr} must lie in 127.0.0.0/8 outside 127.0.0.0/16")
        if network.num_addresses < 4:
            raise NetworkError(f"network: {cidr} is too small for a gateway and a VM")
        self.network = network
        self.gateway = str(network.network_address + 1)
        self._first = int(network.network_address) + 2
        self._last = int(network.broadcast_address) - 1
        self._next = self._first
        self._taken: set[int] = set()

    def allocate(self) -> str:
        size = self._last - self._first + 1
        for step in range(size):
            candidate = self._first + (self._next - self._first + step) % size
            if candidate not in self._taken:
                self._taken.add(candidate)
                self._next = candidate + 1 if candidate < self._last else self._first
                return str(ipaddress.IPv4Address(candidate))
        raise NetworkError(f"network: {self.network} has no free address left")

    def release(self, address: str) -> None:
        self._taken.discard(int(ipaddress.IPv4Address(address)))

    def in_use(self) -> int:
        return len(self._taken)

    def claim(self, address: str) -> bool:
        """Take one given address of the network (a VIP asked for by address); False if it is
        taken already or is not one a VM could have (the network, gateway or broadcast address)."""
        wanted = int(ipaddress.IPv4Address(address))
        if not self._first <= wanted <= self._last or wanted in self._taken:
            return False
        self._taken.add(wanted)
        return True
