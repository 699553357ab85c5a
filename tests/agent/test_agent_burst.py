"""Bursts of changes coalesce into few rounds and reloads, and none is missed (real metad + etcd)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent_helpers import World, port_resource, running

from bench.propagation import Fifo
from pitrix.agent.agent import Agent, build_agent
from pitrix.agent.backends.metad import MetadBackend
from pitrix.agent.config import AgentConfig, Overrides, load_config
from pitrix.agent.metad_client import MetadClient
from pitrix.metad.server import Metad

BURST = 100


def metad_config(world: World, root: Path, **fields: object) -> AgentConfig:
    config = load_config(
        root,
        None,
        Overrides(backend="metad", nodes=[world.metad.instance_url], watch=True),
        environ={"PITRIX_VM_IP": world.ip},
    )
    config.run_commands = False
    for key, value in fields.items():
        setattr(config, key, value)
    return config


def reloads(root: Path) -> int:
    log = root / "reloads.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


async def run_burst(world: World, root: Path, config: AgentConfig) -> tuple[Agent, int]:
    """Start an agent, write BURST values in a row, wait for the last to be rendered; (agent, reloads)."""
    dest = port_resource(root, "echo reload >> reloads.log")
    agent = build_agent(config, announce=lambda _i: None)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 20)
        assert dest.read_text() == "listen 80\n" and reloads(root) == 1
        for i in range(BURST):
            await world.manage.put_data("/clusters/c1/env/web", {"port": str(1000 + i)})
        final = f"listen {1000 + BURST - 1}\n"
        await asyncio.wait_for(agent.wait_until(lambda: dest.read_text() == final), 30)
        return agent, reloads(root) - 1


async def test_burst_of_writes_coalesces(world: World, tmp_path: Path) -> None:
    root = tmp_path / "vm"
    agent, count = await run_burst(world, root, metad_config(world, root, quiet_period=0.1, max_settle=2.0))
    print(f"{BURST} writes -> {count} reloads in {agent.rounds - 1} rounds ({agent.coalesced} coalesced)")
    assert 1 <= count < BURST
    assert agent.coalesced > 0  # the window, not only the round's own duration, folded changes
    # What metad was told matches: the last applied revision covers the final write.
    applied = await world.status("applied")
    assert applied["resources"] == {"port": {"ok": True, "error": None}}
    assert applied["revision"] >= agent.revision > 0


async def test_change_that_finds_the_agent_idle_is_not_held(world: World, tmp_path: Path) -> None:
    """A writer that waits for each change to be applied before the next write is not a burst,
    however soon after the last round it writes: with a window of a minute, each of its changes
    is still applied at once (the 20 s deadline fails if one waited for the window)."""
    root = tmp_path / "vm"
    dest = port_resource(root, "echo reload >> reloads.log")
    config = metad_config(world, root, quiet_period=60.0, max_settle=60.0)
    agent = build_agent(config, announce=lambda _i: None)
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 20)
        for i in range(5):
            await world.manage.put_data("/clusters/c1/env/web", {"port": str(2000 + i)})
            want = f"listen {2000 + i}\n"
            # Applied: its reload ran. Not the file alone: it is in place before the reload, and a
            # write while the round is still before its reload is a burst.
            applied = agent.wait_until(lambda w=want, n=2 + i: dest.read_text() == w and reloads(root) == n)
            await asyncio.wait_for(applied, 20)
        assert agent.coalesced == 0
        assert reloads(root) == 1 + 5


async def test_writer_answered_by_the_reload_itself_is_not_held(world: World, tmp_path: Path) -> None:
    """The reload command tells the writer the new setting is live, then takes a while to exit:
    the writer's next change lands while the round is still running that command. The agent was
    not busy applying anything then, so the change is not a burst (with a window of a minute, the
    20 s deadline fails if it waited)."""
    root = tmp_path / "vm"
    dest = port_resource(root, "echo reload >> reloads.log")
    fifo = Fifo(tmp_path / "live.fifo")
    toml = root / "etc/confd/conf.d/port.toml"
    toml.write_text(
        toml.read_text().replace(
            'reload_cmd = "echo reload >> reloads.log"',
            f'reload_cmd = "echo reload >> reloads.log; cat etc/port.conf > {fifo.path}; sleep 0.3"',
        )
    )
    config = metad_config(world, root, quiet_period=60.0, max_settle=60.0)
    agent = build_agent(config, announce=lambda _i: None)
    try:
        async with running(agent):
            assert await asyncio.wait_for(fifo.lines.get(), 20) == "listen 80"
            for i in range(3):
                await world.manage.put_data("/clusters/c1/env/web", {"port": str(3000 + i)})
                assert await asyncio.wait_for(fifo.lines.get(), 20) == f"listen {3000 + i}"
            await asyncio.wait_for(agent.wait_rounds(4), 20)
            assert agent.coalesced == 0 and dest.read_text() == "listen 3002\n"
    finally:
        fifo.close()


async def test_no_window_still_renders_final_state(world: World, tmp_path: Path) -> None:
    """quiet_period = 0 turns the window off; the final state is still what gets rendered."""
    root = tmp_path / "vm"
    agent, count = await run_burst(world, root, metad_config(world, root, quiet_period=0.0))
    print(f"{BURST} writes without a window -> {count} reloads")
    assert agent.coalesced == 0 and count >= 1


async def test_watch_survives_metad_revision_going_back(store: object, world: World) -> None:
    """A metad whose revision is older than the agent's index (restored, or on a fresh etcd)
    answers the long-poll; the backend reports that as a change instead of waiting for the
    revision to catch up (which could take forever), so the agent re-reads in full."""
    assert isinstance(world.metad, Metad)
    backend = MetadBackend(MetadClient([world.metad.instance_url], bind_address=world.ip))
    try:
        await backend.get_values(["/self/env"])
        current = backend.revision
        # The world's metad holds long-polls for 20 s; a change ends the hold at once, but the
        # answer's revision is still far below the index the agent remembers.
        watcher = asyncio.create_task(backend.watch("/self", ["/self/env"], current + 1_000_000))
        await world.manage.put_data("/clusters/c1/env/web", {"port": "90"})
        index = await asyncio.wait_for(watcher, 25)
        assert current < index < current + 1_000_000
        values = await backend.get_values(["/self/env"])
        assert values == {"/self/env/port": "90"} and backend.revision == index
    finally:
        await backend.close()
