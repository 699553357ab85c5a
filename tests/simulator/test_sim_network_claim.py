"""One simulator per network: a second one on the same block is refused at its start.

Two test runs that drew the same 127.X.0.0/16 once made two simulators hand out the same
addresses: one stack's metadata VM could not serve at its address, its pitrixd asked the other
stack's metad for an issuer until its 120 s deadline, and test_cloud_faults[api] took 143 s. The
simulator now holds the network (a listening socket on its gateway address) while it serves it;
the chaos stacks draw another network when theirs is held.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bench import procs
from bench.stack import Stack
from simulator.cloud import Simulator
from simulator.network import CLAIM_PORT, NETWORK_IN_USE_EXIT, NetworkInUse
from simulator.testing import random_network


def held(address: str) -> bool:
    """Whether something listens on the claim port of ``address`` (a connection is answered)."""
    with socket.socket() as probe:
        return probe.connect_ex((address, CLAIM_PORT)) == 0


async def test_a_second_simulator_on_a_network_in_use_is_refused_until_the_first_stops(
    tmp_path: Path,
) -> None:
    network = random_network()
    first = Simulator(tmp_path / "first", network=network)
    second = Simulator(tmp_path / "second", network=network)
    await first.start()
    try:
        assert held(first.pool.gateway)
        with pytest.raises(NetworkInUse, match=f"{network} is in use by another simulator"):
            await second.start()
        assert held(first.pool.gateway)  # the refused one took nothing from the first
    finally:
        await first.stop()
    assert not held(first.pool.gateway)  # let go with the stop
    await second.start()  # the network is free again
    try:
        assert held(second.pool.gateway)
    finally:
        await second.stop()


async def test_a_stack_draws_another_network_when_its_own_is_in_use(tmp_path: Path) -> None:
    network = f"127.{procs.private_net()}.0.0/16"
    async with Simulator(tmp_path / "holder", network=network):
        fixed = Stack(tmp_path / "fixed", network)
        with pytest.raises(procs.ChildExited) as refused:  # the pitrix-sim command: exit 3
            await fixed.start_sim()
        assert refused.value.returncode == NETWORK_IN_USE_EXIT
        assert "is in use by another simulator" in str(refused.value)

        drawn = Stack(tmp_path / "drawn", network, redraw_network=True)
        try:
            await drawn.start_sim()
            assert drawn.network != network
            assert held(drawn.network.replace(".0.0/16", ".0.1"))
        finally:
            await drawn.stop()
