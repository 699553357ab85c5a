"""The agent against the real pitrix-metad (over the real etcd): reads, long-poll, failover, write-back."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import AgentProcess, World, port_resource, running

from pitrix.agent.agent import Agent, build_agent
from pitrix.agent.backends.metad import MetadBackend
from pitrix.agent.config import Overrides, load_config
from pitrix.agent.errors import BackendError
from pitrix.agent.metad_client import MetadClient
from pitrix.agent.report import MetadReporter
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.store import Store


async def test_backend_reads_and_long_polls(world: World) -> None:
    backend = MetadBackend(MetadClient([world.metad.instance_url], bind_address=world.ip))
    try:
        values = await backend.get_values(["/self/host", "/self/env", "/self/hosts"])
        assert values["/self/host/ip"] == world.ip and values["/self/env/port"] == "80"
        assert values["/self/hosts/web/i-1/ip"] == world.ip
        start = backend.revision
        assert start > 0
        assert await backend.watch("/self", ["/self/env"], 0) >= start  # index 0: answers at once
        watcher = asyncio.create_task(backend.watch("/self", ["/self/env"], start))
        await world.manage.put_data("/clusters/c1/env/web", {"port": "81"})
        index = await asyncio.wait_for(watcher, 10)
        assert index > start
        # The read after a watch uses the view the watch answered with (revision ``index``), even
        # though metad has moved on; the next watch from ``index`` then fires at once.
        await world.manage.put_data("/clusters/c1/env/web", {"port": "82"})
        values = await backend.get_values(["/self/env", "/self/host/ip"])
        assert values == {"/self/env/port": "81", "/self/host/ip": world.ip}
        assert backend.revision == index
        newer = await asyncio.wait_for(backend.watch("/self", ["/self/env"], index), 10)
        assert newer > index
        assert (await backend.get_values(["/self/env"]))["/self/env/port"] == "82"
        # Without a fresh watch answer, reads go to metad again.
        assert (await backend.get_values(["/self/env"]))["/self/env/port"] == "82"
    finally:
        await backend.close()


async def test_failover_and_identity(world: World) -> None:
    # The first node refuses connections: the client moves on to the live one and stays there.
    client = MetadClient(["127.0.0.1:1", world.metad.instance_url], bind_address=world.ip)
    try:
        answer = await client.get("/self/host/role")
        assert answer.body == "web"
        assert client.nodes[client._current] == world.metad.instance_url
    finally:
        await client.close()
    # A caller whose address maps to no instance is refused, clearly, without failover.
    stranger = MetadClient([world.metad.instance_url], bind_address="127.102.0.250")
    try:
        with pytest.raises(BackendError, match="HTTP 403"):
            await stranger.get("/self")
    finally:
        await stranger.close()
    dead = MetadClient(["127.0.0.1:1"], bind_address=world.ip)
    try:
        with pytest.raises(BackendError, match="no node answered"):
            await dead.get("/self")
    finally:
        await dead.close()


async def test_agent_runs_command_and_writes_back(world: World, tmp_path: Path) -> None:
    root = tmp_path / "vm"
    (root / "etc/confd/conf.d").mkdir(parents=True)
    config = load_config(
        root,
        None,
        Overrides(backend="metad", nodes=[world.metad.instance_url], watch=True),
        environ={"PITRIX_VM_IP": world.ip},
    )
    config.heartbeat_interval = 0.2
    config.health_cmd = "echo unwell; exit 3"
    agent = build_agent(config, announce=lambda _i: None)  # as pitrix-agent (and embedders) build it
    async with running(agent):
        await asyncio.wait_for(agent.wait_rounds(1), 10)
        applied = await world.status("applied")
        assert applied["revision"] > 0 and applied["resources"] == {}
        seen = agent.rounds
        await world.manage.put_data(
            "/clusters/c1/cmd/i-1", {"id": "cmd-1", "cmd": "echo started; exit 4", "timeout": "30"}
        )
        assert agent.runner is not None
        ledger = root / "var/lib/pitrix-agent/commands/cmd-1.json"
        async with asyncio.timeout(15):
            while not ledger.exists():  # each round offers the command it saw; it runs after it
                await agent.wait_rounds(seen + 1)
                seen = agent.rounds
                await agent.runner.wait_idle()
        record = await world.status("cmd", "cmd-1")
        assert record["status"] == "failed"
        assert record["exit_code"] == 4 and record["output_tail"] == "started\n"
        await asyncio.wait_for(agent.wait_health_checks(1), 10)
        health = await world.status("health")
        assert health["ok"] is False and health["error"] == "exit status 3: unwell"
        heartbeat = await world.status("heartbeat")
        assert heartbeat["interval"] == 0.2 and heartbeat["pid"] == os.getpid()


async def test_console_script_against_metad(world: World, tmp_path: Path) -> None:
    """The real pitrix-agent with its config file written as userdata would, bound to the VM's address."""
    root = tmp_path / "vm"
    (root / "etc/confd/conf.d").mkdir(parents=True)
    (root / "etc/pitrix").mkdir(parents=True)
    (root / "etc/pitrix/agent.toml").write_text(
        f'backend = "metad"\nnodes = ["{world.metad.instance_url}"]\nwatch = true\n'
        "[pitrix]\nheartbeat_interval = 1\n"
    )
    await world.manage.put_data("/clusters/c1/cmd/i-1", {"id": "boot-1", "cmd": "echo hi > booted"})
    agent = await AgentProcess.start(root, env={"PITRIX_VM_IP": world.ip})
    try:
        ready = await agent.ready()
        assert ready["ok"] is True and int(str(ready["revision"])) > 0
        await agent.wait_log("command reported", cmd_id="boot-1", status="successful")
        assert (root / "booted").read_text() == "hi\n"
        assert (root / "var/lib/pitrix-agent/commands/boot-1.json").exists()
    finally:
        assert await agent.terminate() == 0, agent.tail
    record = await world.status("cmd", "boot-1")
    assert record["status"] == "successful" and record["exit_code"] == 0


GOLDEN = Path("/work/shared/confd-golden")


def _strings(tree: Any) -> Any:
    return {k: _strings(v) for k, v in tree.items()} if isinstance(tree, dict) else str(tree)


async def test_golden_cases_through_metad(world: World, tmp_path: Path) -> None:
    """The confd golden data served as an instance's /self view renders the same bytes as confd."""
    import shutil

    import yaml

    data = yaml.safe_load((GOLDEN / "data.yaml").read_text())
    lb_ip = data["host"]["ip"]  # 127.100.0.2: only the agent's outgoing socket binds to it
    doc = {
        "cluster": data["cluster"],
        "hosts": data["hosts"],
        "env": {"lb": data["env"]},
        "cmd": {"i-l1": data["cmd"]},
    }
    doc["hosts"]["lb"]["i-l1"].update({"instance_id": "i-l1", "role": "lb"})
    await world.manage.post_data("/clusters/cg", _strings(doc))
    await world.manage.put_mapping("i-l1", {"cluster_id": "cg", "role": "lb", "ip": lb_ip})
    shutil.copytree(GOLDEN / "confdir", tmp_path / "confdir")
    out = tmp_path / "out"
    out.mkdir()
    for toml in (tmp_path / "confdir/conf.d").glob("*.toml"):
        toml.write_text(toml.read_text().replace("@OUT@", str(out)))
    agent = await AgentProcess.start(
        Path("/"),
        "-onetime",
        "-backend",
        "metad",
        "-node",
        world.metad.instance_url,
        "-confdir",
        "confdir",
        "-config-file",
        "/dev/null",
        cwd=tmp_path,
        env={"PITRIX_VM_IP": lb_ip},
    )
    assert await asyncio.wait_for(agent.proc.wait(), 30) == 0, await agent.proc.stderr.read()  # type: ignore[union-attr]
    for expected in sorted((GOLDEN / "expect").glob("*.out")):
        assert (out / expected.name).read_bytes() == expected.read_bytes(), expected.name


async def test_watch_fails_over_when_a_metad_stops(world: World, store: Store, tmp_path: Path) -> None:
    """Two metads over one etcd; the one the agent long-polls stops; the next change still lands."""
    second = Metad(store, world.metad.listen_ip.rsplit(".", 1)[0] + ".2", 0, 0, wait_timeout=20.0)
    await second.start()
    root = tmp_path / "vm"
    port_resource(root)
    config = load_config(
        root,
        None,
        Overrides(backend="metad", nodes=[world.metad.instance_url, second.instance_url], watch=True),
        environ={"PITRIX_VM_IP": world.ip},
    )
    backend = MetadBackend.from_config(config)
    agent = Agent(config, backend, MetadReporter(backend.client), announce=lambda _i: None)
    try:
        async with running(agent):
            await asyncio.wait_for(agent.wait_rounds(1), 10)
            assert (root / "etc/port.conf").read_text() == "listen 80\n"
            await world.metad.stop()
            seen = agent.rounds
            await world.manage.close()
            async with MetadManagementClient(second.manage_url) as manage:
                await manage.put_data("/clusters/c1/env/web", {"port": "8080"})
            async with asyncio.timeout(20):
                while (root / "etc/port.conf").read_text() != "listen 8080\n":
                    await agent.wait_rounds(seen + 1)
                    seen = agent.rounds
            assert backend.client.nodes[backend.client._current] == second.instance_url
    finally:
        await second.stop()


async def test_agent_started_before_its_mapping_catches_up(world: World, tmp_path: Path) -> None:
    """At boot the agent usually starts before pitrixd registers it: it retries, then converges."""
    root = tmp_path / "vm"
    (root / "etc/confd/conf.d").mkdir(parents=True)
    late_ip = world.ip.rsplit(".", 1)[0] + ".11"
    config = load_config(
        root,
        None,
        Overrides(backend="metad", nodes=[world.metad.instance_url], watch=True),
        environ={"PITRIX_VM_IP": late_ip},
    )
    config.heartbeat_interval = 0.1
    agent = build_agent(config, announce=lambda _i: None)
    async with running(agent):
        await asyncio.wait_for(agent.wait_round_failures(1), 10)  # 403: nobody maps to late_ip yet
        assert agent.rounds == 0
        await world.manage.put_data(
            "/clusters/c1/hosts/web/i-2", {"instance_id": "i-2", "ip": late_ip, "role": "web"}
        )
        await world.manage.put_data("/clusters/c1/cmd/i-2", {"id": "late-1", "cmd": "echo ok"})
        await world.manage.put_mapping("i-2", {"cluster_id": "c1", "role": "web", "ip": late_ip})
        await asyncio.wait_for(agent.wait_rounds(1), 10)
        assert agent.runner is not None
        await asyncio.wait_for(agent.runner.wait_idle(), 10)
        await world.caught_up()
        raw = await world.manage.get_data("/_pitrix/status/c1/i-2/cmd/late-1")
        assert json.loads(raw)["status"] == "successful"


async def test_a_read_of_several_subtrees_of_self_is_one_request(world: World) -> None:
    """One GET of ``/self`` serves a round's subtrees (each more at once was a TLS handshake on
    metad), with the values one GET per subtree finds."""
    client = MetadClient([world.metad.instance_url], bind_address=world.ip)
    backend = MetadBackend(client)
    asked: list[str] = []
    get = client.get

    async def counted(path: str, **kwargs: Any) -> Any:
        asked.append(path)
        return await get(path, **kwargs)

    client.get = counted  # type: ignore[method-assign]
    try:
        keys = ["/self/host", "/self/env", "/self/hosts", "/self/cmd", "/self/nothing/here"]
        values = await backend.get_values(keys)
        assert asked == ["/self"]
        assert backend.revision > 0
        separately: dict[str, str] = {}
        for key in keys:
            separately.update(await MetadBackend(client).get_values([key]))
        assert values == separately
        assert values["/self/host/ip"] == world.ip and values["/self/env/port"] == "80"
        assert not any(k.startswith("/self/nothing") for k in values)
    finally:
        await backend.close()
