"""The agent follows the metadata cluster's members (``pitrix.metad.roster``) without a redeploy.

Three metads over one etcd stand for a metadata cluster whose member B was replaced by C: the
real ``pitrix-agent``, deployed with [A, B], learns [A, C] from an answer it gets anyway, fails
over to C when A goes too, and a restart with the same deployed config still uses [A, C].
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from agent_helpers import AgentProcess, World, port_resource

from pitrix.agent.errors import BackendError, RejectedError
from pitrix.agent.metad_client import MetadClient
from pitrix.agent.metad_roster import FILE_NAME, SavedRoster, load, save
from pitrix.metad import roster
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.runtime.steps.identity import metad_order
from pitrix.store import Store


def test_the_agent_turns_a_roster_as_the_runtime_deploys_it() -> None:
    urls = [f"https://127.0.0.{k}:8080" for k in range(1, 4)]
    for n in range(12):
        assert roster.rotated(urls, "cl-1", f"node-{n}") == metad_order(urls, "cl-1", f"node-{n}")
    assert roster.published(roster.document(urls)) == urls
    assert roster.digest(urls) == roster.digest(list(reversed(urls)))
    # The same digest as hashlib's SHA-256, which rosters already stored in etcd were named with.
    assert roster.digest(urls) == hashlib.sha256("\n".join(sorted(urls)).encode()).hexdigest()[:16]
    damaged = {**roster.document(urls), roster.DIGEST: "0" * 16}
    assert roster.published(damaged) is None
    assert roster.published(roster.document([])) is None


async def test_a_saved_roster_is_used_only_over_the_config_it_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state" / FILE_NAME
    deployed, adopted = (
        ["http://127.0.0.1:1", "http://127.0.0.2:1"],
        ["http://127.0.0.3:1", "http://127.0.0.1:1"],
    )
    await save(path, SavedRoster(adopted, deployed))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(path, deployed) == SavedRoster(adopted, deployed)
    assert load(path, ["http://127.0.0.9:1"]) is None  # a config deployed since wins
    assert load(None, deployed) is None
    path.write_text('{"nodes": [], "configured": ' + json.dumps(deployed) + "}")
    assert load(path, deployed) is None  # never an empty list
    path.write_text("{not json")
    assert load(path, deployed) is None


async def test_roster_is_served_read_only_to_identified_instances(world: World) -> None:
    url = world.metad.instance_url
    client = MetadClient([url], bind_address=world.ip)
    stranger = MetadClient([url], bind_address=world.ip.rsplit(".", 1)[0] + ".250")
    try:
        assert (await client.get(roster.PATH)).body is None  # a 404: nothing published yet
        await world.manage.put_data("/clusters/c1/hosts/web/i-1", {"node_id": "node-1"})
        await world.manage.post_data(roster.KEY, roster.document([url, "https://127.0.0.9:8080"]))
        answer = await client.get(roster.PATH)
        assert answer.body["urls"] == [url, "https://127.0.0.9:8080"]
        assert (answer.body["cluster_id"], answer.body["node_id"]) == ("c1", "node-1")
        with pytest.raises(RejectedError, match="403"):
            await client.put(roster.PATH, {"urls": [url]})
        with pytest.raises(BackendError, match="403"):
            await stranger.get(roster.PATH)
    finally:
        await client.close()
        await stranger.close()


async def test_agent_adopts_new_members_and_keeps_them_across_a_restart(
    world: World, store: Store, tmp_path: Path
) -> None:
    base = world.metad.listen_ip.rsplit(".", 1)[0]
    b, c = (Metad(store, f"{base}.{k}", 0, 0, wait_timeout=20.0) for k in (2, 3))
    await b.start()
    await c.start()
    a_url, b_url, c_url = world.metad.instance_url, b.instance_url, c.instance_url
    await world.manage.put_data("/clusters/c1/hosts/web/i-1", {"node_id": "node-1"})
    root = tmp_path / "vm"
    port_resource(root)
    (root / "etc/pitrix").mkdir(parents=True)
    (root / "etc/pitrix/agent.toml").write_text(
        f'backend = "metad"\nnodes = ["{a_url}", "{b_url}"]\nprefix = "/self"\nwatch = true\n'
        "[pitrix]\nheartbeat_interval = 0.2\n"
    )
    saved = root / "var/lib/pitrix-agent" / FILE_NAME
    agent = await AgentProcess.start(root, env={"PITRIX_VM_IP": world.ip})
    try:
        await agent.ready()
        # A roster none of whose members answers is not adopted: the agent keeps what works.
        await world.manage.post_data(
            roster.KEY, roster.document(["http://127.0.0.1:1", "http://127.0.0.1:2"])
        )
        await agent.wait_log("metad roster not adopted: none of its members answers")
        # B is lost and replaced by C: the runtime publishes [A, C].
        await b.stop()
        await world.manage.post_data(roster.KEY, roster.document([a_url, c_url]))
        adopted = await agent.wait_log("metad roster adopted")
        order = roster.rotated([a_url, c_url], "c1", "node-1")
        assert adopted["nodes"] == order
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert json.loads(saved.read_text()) == {"nodes": order, "configured": [a_url, b_url]}
        # A goes too: the agent's next failover is to C, which it was never deployed with.
        await world.metad.stop()
        async with MetadManagementClient(c.manage_url) as manage:
            await manage.put_data("/clusters/c1/cmd/i-1", {"id": "after-loss", "cmd": "echo moved"})
            await agent.wait_log("command reported", cmd_id="after-loss", status="successful")
            assert any(e.get("event") == "metad failover" and e.get("node") == c_url for e in agent.log)
            assert await agent.terminate() == 0, agent.tail
            # Restarted with the config it was deployed with (A and B both gone): the saved list.
            agent = await AgentProcess.start(root, env={"PITRIX_VM_IP": world.ip})
            await agent.ready()
            await manage.put_data("/clusters/c1/cmd/i-1", {"id": "after-restart", "cmd": "echo again"})
            await agent.wait_log("command reported", cmd_id="after-restart", status="successful")
    finally:
        await agent.kill()
        await c.stop()
        await b.stop()
