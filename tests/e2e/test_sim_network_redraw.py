"""A simulator start that draws a network another simulator serves draws another (bounded).

The simulator refuses a network another one serves (pitrix-sim exits 3); the e2e harness's
``start_simulator`` and ``pitrix demo`` drew their network once and failed on such a clash.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from e2e_daemons import start_simulator

from pitrix.cli import demo
from pitrix.cli.demo import DemoFailed, stop_child
from simulator.cloud import Simulator
from simulator.network import CLAIM_PORT, NETWORK_IN_USE_EXIT
from simulator.testing import random_network

pytestmark = pytest.mark.e2e


def held(network: str) -> bool:
    """Whether a simulator claims ``network`` (something answers on its gateway's claim port)."""
    gateway = network.rsplit(".", 1)[0] + ".1"
    with socket.socket() as probe:
        return probe.connect_ex((gateway, CLAIM_PORT)) == 0


def test_the_demo_knows_the_simulators_exit_status_for_a_network_in_use() -> None:
    assert demo.SIM_NETWORK_IN_USE == NETWORK_IN_USE_EXIT


async def test_a_network_in_use_is_drawn_again(tmp_path: Path) -> None:
    taken = random_network()
    free = random_network()
    while free == taken:
        free = random_network()
    drawn: list[str] = []

    def draw() -> str:
        drawn.append(taken if not drawn else free)
        return drawn[-1]

    async with Simulator(tmp_path / "holder", network=taken):
        sim = await start_simulator(tmp_path, draw=draw)
        try:
            assert drawn == [taken, free]
            assert held(free)
            assert "is in use by another simulator" in (tmp_path / "sim.log").read_text()
        finally:
            await stop_child(sim)


async def test_drawing_gives_up_after_a_bound_naming_the_networks(tmp_path: Path) -> None:
    taken = random_network()
    drawn: list[str] = []

    def draw() -> str:
        drawn.append(taken)
        return taken

    async with Simulator(tmp_path / "holder", network=taken):
        gave_up = f"every network drawn \\({taken}, .*is in use by another simulator"
        with pytest.raises(DemoFailed, match=gave_up):
            await start_simulator(tmp_path, draw=draw)
    assert len(drawn) == demo.NETWORK_DRAWS
