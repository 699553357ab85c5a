"""The appcenter profile's service semantics, step by step against a real etcd, a real metad and the
nodes' real agents (in-process, each bound to its node's loopback address, running real ``sh``):
destroy first with its veto, scale_in on the staying nodes, stop in ascending order, JSON-argument
parameters, locale messages in errors, display tabs and passphraseless key pairs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import shutil
import stat
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pitrix.agent.agent import build_agent
from pitrix.agent.config import Overrides, load_config
from pitrix.metad import keyspace as ks
from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.runtime import passphraseless
from pitrix.runtime.actions import BY_NAME, BY_VERB
from pitrix.runtime.actions.base import Desk, InvalidRequest
from pitrix.runtime.actions.create import prepare
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.keys import job_key, node_key, role_key_key, runtime_key
from pitrix.runtime.records import Cluster, Job, MetadataCluster, Node, Runtime
from pitrix.runtime.repository import Repository
from pitrix.runtime.spec import parse_spec
from pitrix.runtime.steps.context import JobContext, RolledBack
from pitrix.runtime.steps.custom import ServiceFailed, run_custom, service_command
from pitrix.runtime.steps.destroying import Vetoed, destroy_leaving, run_destroy
from pitrix.runtime.steps.membership import mark_leaving, on_leaving, on_remaining
from pitrix.runtime.steps.nodes import nodes, save
from pitrix.runtime.steps.ordering import apply_order
from pitrix.runtime.steps.published import stdout_of
from pitrix.runtime.steps.publishing import register
from pitrix.runtime.steps.services import exit_message, run_service
from pitrix.runtime.tabs import TabFailed, parse_table, run_tab
from pitrix.sealing import Sealer, is_sealed
from pitrix.store import Store

NODE = '$(basename "$PWD")'  # an agent runs commands in its VM's root, named here by node id


def app(log: Path) -> dict[str, Any]:
    def say(what: str) -> str:
        return f'echo "{what} {NODE}" >> {log}'

    return {
        "name": "zk",
        "profile": "appcenter",
        "locale": {
            "en": {"err_code3": "the ensemble would lose its quorum"},
            "zh-cn": {"err_code3": "(zh) quorum", "err_code5": "(zh) no snapshot space"},
        },
        "display_tabs": {
            "sessions": {
                "cmd": 'echo \'{"labels": ["node", "sessions"], "data": [["x", 7]]}\'',
                "roles": ["zk_node"],
            },
            "broken": {"cmd": "echo not a table"},
        },
        "roles": [
            {
                "name": "zk_node",
                "count": 3,
                "image": "x",
                "count_range": [1, 3, 5],
                "passphraseless": "ssh-dsa",
                "services": {
                    "stop": {"cmd": say("stop"), "order": 1},
                    "scale_in": {"cmd": say("scale_in")},
                    # a node holding the file ``keep`` refuses to go
                    "destroy": {"cmd": f"{say('destroy')}; test ! -f keep || exit 3", "allow_force": False},
                },
                "custom_services": {
                    "backup": {
                        "cmd": "printf '%s\\n' >> args",
                        "params_style": "json_arg",
                        "params": {
                            "snapshot_id": {"type": "string"},
                            "level": {"type": "integer", "default": 1},
                            "ratio": {"type": "number", "default": 0.5},
                            "full": {"type": "boolean", "default": False},
                        },
                    },
                    "fail": {"cmd": "exit 5"},
                },
            },
            {
                "name": "client",
                "count": 1,
                "image": "x",
                "scale_horizontal": False,
                "services": {"stop": {"cmd": say("stop"), "order": 0}},
            },
        ],
    }


@dataclass
class World:
    ctx: JobContext
    log: Path
    roots: dict[str, Path]

    def with_job(self, job_id: str, action: str = "scale_in") -> JobContext:
        return dataclasses.replace(self.ctx, job=Job(id=job_id, cluster_id="cl-ac", action=action))

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@contextlib.asynccontextmanager
async def agent_of(metad: Metad, ip: str, root: Path) -> AsyncIterator[None]:
    config = load_config(
        root,
        None,
        Overrides(backend="metad", nodes=[metad.instance_url], watch=True),
        environ={"PITRIX_VM_IP": ip},
    )
    config.heartbeat_interval = 0.5
    agent = build_agent(config, announce=lambda _i: None)
    task = asyncio.create_task(agent.run_forever())
    try:
        yield
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)
        await agent.close()


@pytest.fixture
async def world(store: Store, sealer: Sealer, tmp_path: Path) -> AsyncIterator[World]:
    """zk_node-1..3 and client-1, registered in a metad on their own loopback /24, each with its agent."""
    net = f"127.{random.randint(101, 254)}.{random.randint(0, 255)}"
    metad = Metad(store, f"{net}.1", 0, 0, wait_timeout=30.0, keepalive=0.3)
    await metad.start()
    manage = MetadManagementClient(metad.manage_url, idle_timeout=5.0)
    agents = AgentStatus(manage, "cl-ac")
    log = tmp_path / "services.log"
    cluster = Cluster(
        id="cl-ac",
        name="zk",
        owner="o",
        runtime="r",
        app=parse_spec(app(log)),
        counts={"zk_node": 3, "client": 1},
        state="active",
    )
    ctx = JobContext(
        store=store,
        cluster=cluster,
        job=Job(id="j-1", cluster_id="cl-ac", action="create"),
        provider=None,  # type: ignore[arg-type]  # no step here reaches the cloud
        metadata=MetadataCluster(owner="o", runtime="r", name="m"),
        metad=manage,
        agents=agents,
        sealer=sealer,
        keypairs=KeyPairs(store, sealer),
    )
    roots: dict[str, Path] = {}
    members = [("zk_node", 1), ("zk_node", 2), ("zk_node", 3), ("client", 1)]
    for n, (role, index) in enumerate(members, start=11):
        node_id = f"{role}-{index}"
        roots[node_id] = tmp_path / node_id
        (roots[node_id] / "etc/confd/conf.d").mkdir(parents=True)
        node = Node(
            node_id=node_id,
            role=role,
            index=index,
            name=f"cl-ac-{node_id}",
            instance_id=f"i-{node_id.replace('_', '')}",
            ip=f"{net}.{n}",
            status="running",
        )
        await save(ctx, node)
    await register(ctx, list(roots))
    await agents.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            for node in await nodes(ctx):
                await stack.enter_async_context(agent_of(metad, node.ip, roots[node.node_id]))
            yield World(ctx, log, roots)
    finally:
        await agents.close()
        await manage.close()
        await metad.stop()


async def statuses(ctx: JobContext) -> dict[str, str]:
    return {n.node_id: n.status for n in await nodes(ctx)}


async def test_a_failing_destroy_vetoes_the_scale_in_then_destroy_goes_first(world: World) -> None:
    (world.roots["zk_node-3"] / "keep").touch()
    ctx = world.with_job("j-veto")
    await mark_leaving(ctx, "zk_node", 1, ["zk_node-3"])
    assert (await statuses(ctx))["zk_node-3"] == "leaving"
    with pytest.raises(Vetoed) as vetoed:
        await destroy_leaving(ctx)
    assert isinstance(vetoed.value, RolledBack)  # the job ends rolled back: the cluster active
    message = str(vetoed.value)
    assert message.startswith("destroy refused on 1 node(s), nothing removed: zk_node-3 exit 3")
    assert "(the ensemble would lose its quorum)" in message  # en first, though zh-cn has it too
    assert set((await statuses(ctx)).values()) == {"registered"}  # members again
    assert await ctx.metad.get_data(ks.section(ctx.cid, ks.DELETING_HOSTS)) in (None, {}, "")
    # The same step run again (a resume after the veto was written) keeps the veto.
    with pytest.raises(Vetoed, match="refused earlier in this job"):
        await destroy_leaving(ctx)
    assert world.lines() == ["destroy zk_node-3"]

    # Without the veto: destroy on the leaver, scale_in on the staying ones, then its stop.
    (world.roots["zk_node-3"] / "keep").unlink()
    world.log.unlink()
    ctx = world.with_job("j-ok")
    await mark_leaving(ctx, "zk_node", 1, ["zk_node-3"])
    assert (await destroy_leaving(ctx)) == "destroy on 1 node(s)"
    await on_remaining(ctx, run_service, "scale_in")
    await on_leaving(ctx, run_service, "stop")
    lines = world.lines()
    assert lines[0] == "destroy zk_node-3" and lines[-1] == "stop zk_node-3"
    assert sorted(lines[1:3]) == ["scale_in zk_node-1", "scale_in zk_node-2"] and len(lines) == 4


async def test_a_delete_s_destroy_veto_gives_way_to_force_and_rolls_back_to_active(world: World) -> None:
    (world.roots["zk_node-2"] / "keep").touch()
    with pytest.raises(Vetoed, match=r"zk_node-2 exit 3 \(the ensemble would lose its quorum\)"):
        await run_destroy(world.with_job("j-del", "delete"), ["zk_node-1", "zk_node-2"])
    forced = await run_destroy(world.with_job("j-del2", "delete"), ["zk_node-1", "zk_node-2"], force=True)
    assert forced.startswith("destroy on 2 node(s); failed on zk_node-2 exit 3 (the ensemble")
    assert forced.endswith("(going on: forced)")
    # a vetoed (rolled back) delete or scale-in leaves the cluster active
    assert BY_NAME["delete"].edge.rolled_back == BY_NAME["scale_in"].edge.rolled_back == "active"


async def test_json_arguments_typed_and_quoted_and_locale_messages(world: World) -> None:
    ctx = world.with_job("j-svc", "service")
    await ctx.store.put(job_key(ctx.cid, "j-svc"), ctx.job.dump())
    awkward = "snap 1 'quoted' $HOME"
    params = {"zk_node": {"snapshot_id": awkward, "level": "3", "ratio": "2", "full": "true"}}
    await run_custom(ctx, "backup", ["zk_node-1"], params, [])
    printed = (world.roots["zk_node-1"] / "args").read_text()
    assert json.loads(printed) == {"full": True, "level": 3, "ratio": 2, "snapshot_id": awkward}
    assert printed == '{"full":true,"level":3,"ratio":2,"snapshot_id":"snap 1 \'quoted\' $HOME"}\n'
    # exit 5 has a message in zh-cn only: that one is quoted
    with pytest.raises(ServiceFailed, match=r"zk_node-2 exit 5 \(\(zh\) no snapshot space\)"):
        await run_custom(ctx, "fail", ["zk_node-2"], {}, [])


def test_an_ordering_may_print_appcenter_s_comma_separated_ids() -> None:
    ids = ["zk_node-1", "zk_node-2", "zk_node-3"]
    assert apply_order(ids, "zk_node-2,zk_node-3,zk_node-1\n") == ["zk_node-2", "zk_node-3", "zk_node-1"]
    assert apply_order(ids, "zk_node-3, zk_node-1") == ["zk_node-2", "zk_node-3", "zk_node-1"]


def test_env_style_stays_and_exit_messages_fall_back() -> None:
    spec = parse_spec(app(Path("/x")))
    service = spec.role("zk_node").custom_services["backup"]
    assert service_command(service, {"level": "2"}) == "printf '%s\\n' >> args '{\"level\":2}'"
    env_style = service.model_copy(update={"params_style": "env"})
    assert service_command(env_style, {"level": "2"}) == "export level=2\nprintf '%s\\n' >> args"
    assert exit_message(spec, 3) == "the ensemble would lose its quorum"
    assert exit_message(spec, 5) == "(zh) no snapshot space"
    assert exit_message(spec, 7) == "" and exit_message(spec, None) == ""
    # parsed output is stdout when the agent reports it apart (stderr stays out), else the mix
    assert stdout_of({"stdout_tail": '{"a": 1}', "output_tail": 'warning\n{"a": 1}'}) == '{"a": 1}'
    assert stdout_of({"stdout_tail": "", "output_tail": "only stderr"}) == ""
    assert stdout_of({"output_tail": "older agent"}) == "older agent"


async def test_display_tabs_run_on_a_node_of_their_roles(world: World) -> None:
    ctx = world.ctx
    every = await nodes(ctx)
    zk = [n for n in every if n.role == "zk_node"]
    # as in an active cluster: the agents have reported (a tab asks metad for a live node)
    await ctx.agents.wait_for(lambda _: all(ctx.agents.has_heartbeat(n.instance_id) for n in every), 20)
    table = await run_tab(ctx.metad, ctx.agents, ctx.cluster, "sessions", zk)
    assert table == {
        "tab": "sessions",
        "node": "zk_node-1",
        "labels": ["node", "sessions"],
        "data": [["x", 7]],
    }
    with pytest.raises(TabFailed, match="tab broken: its output is not JSON"):
        await run_tab(ctx.metad, ctx.agents, ctx.cluster, "broken", every)
    for bad, why in [
        ('{"data": []}', "printed no {labels, data} object"),
        ('{"labels": ["a"], "data": [[1, 2]]}', "data row 0 is not a list of at most 1 cells"),
        ('{"labels": ["a"], "data": [[{"x": 1}]]}', "data row 0 holds a nested value"),
    ]:
        with pytest.raises(TabFailed, match=why.replace("{", r"\{").replace("}", r"\}")):
            parse_table("t", bad)


async def test_passphraseless_pair_made_once_sealed_and_installed(world: World, tmp_path: Path) -> None:
    ctx = world.ctx
    await passphraseless.load(ctx)
    public = passphraseless.public_key(ctx, "zk_node")
    assert public.startswith("ssh-rsa ")  # ssh-dsa asked: DSA is obsolete, RSA given
    assert passphraseless.public_key(ctx, "client") == ""
    stored = await ctx.store.get(role_key_key(ctx.cid, "zk_node"))
    assert stored is not None and is_sealed(stored.value)
    again = world.with_job("j-2")  # another job (or replica) loads the same pair
    await passphraseless.load(again)
    assert passphraseless.public_key(again, "zk_node") == public
    root = tmp_path / "vm"
    (root / "root/.ssh").mkdir(parents=True)
    (root / "root/.ssh/authorized_keys").write_text("ssh-ed25519 AAAA pitrixd\n")
    script = passphraseless.identity_script(ctx, "zk_node")
    for _ in range(2):  # a userdata run twice authorizes the key once
        await asyncio.to_thread(
            subprocess.run,
            ["sh", "-ec", script],
            env={"ROOT": str(root), "PATH": "/usr/bin:/bin"},
            check=True,
        )
    assert (root / "root/.ssh/authorized_keys").read_text() == f"ssh-ed25519 AAAA pitrixd\n{public}\n"
    private = root / "root/.ssh/id_rsa"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (root / "root/.ssh/id_rsa.pub").read_text() == public + "\n"
    if shutil.which("ssh-keygen"):
        keygen = ["ssh-keygen", "-y", "-f", str(private)]
        derived = await asyncio.to_thread(subprocess.run, keygen, capture_output=True, check=True)
        assert derived.stdout.decode().split()[:2] == public.split()[:2]
    assert passphraseless.identity_script(ctx, "client") == ""


async def test_scale_refuses_counts_out_of_range_and_fixed_roles(store: Store, sealer: Sealer) -> None:
    cluster = Cluster(
        id="cl-r", name="zk", owner="o", runtime="r", app=parse_spec(app(Path("/x"))),
        counts={"zk_node": 3, "client": 1}, state="active",
    )  # fmt: skip
    for index in (1, 2, 3):
        node = Node(
            node_id=f"zk_node-{index}", role="zk_node", index=index, name=f"n{index}", status="registered"
        )
        await store.put(node_key("cl-r", node.node_id), node.dump())
    desk = Desk(Repository(store, sealer), None, sealer)  # type: ignore[arg-type]
    scale = BY_VERB["scale"]
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"role": "zk_node", "count": 4}, "roles.zk_node.count: 4 is not one of 1, 3, 5"),
        ({"role": "zk_node", "nodes": ["zk_node-3"]}, "roles.zk_node.count: 2 is not one of 1, 3, 5"),
        ({"role": "client", "count": 2}, "roles.client: scale_horizontal is false"),
    ]
    for body, message in refusals:
        with pytest.raises(InvalidRequest) as refused:
            await scale.accept(desk, cluster, body)
        assert str(refused.value).startswith(message)
    await store.put(runtime_key("r"), Runtime(name="r", provider="simulator").sealed(sealer))
    with pytest.raises(
        InvalidRequest, match=r"^counts\.zk_node: 2 is not one of 1, 3, 5 \(its count_range\)$"
    ):
        await prepare(
            desk,
            owner="o",
            runtime="r",
            app=app(Path("/x")),
            name="",
            counts={"zk_node": 2},
            links={},
            channel="rest",
        )
    accepted = await scale.accept(desk, cluster, {"role": "zk_node", "count": 5})
    assert accepted.action.name == "scale_out"


def test_plans_stop_ascending_and_destroy_first() -> None:
    ctx = JobContext(
        store=None,  # type: ignore[arg-type]
        cluster=Cluster(
            id="cl-p", name="zk", owner="o", runtime="r", app=parse_spec(app(Path("/x"))),
            counts={"zk_node": 3, "client": 1},
        ),
        job=Job(id="j", cluster_id="cl-p", action="stop"),
        provider=None,  # type: ignore[arg-type]
        metadata=MetadataCluster(owner="o", runtime="r", name="m"),
        metad=None,  # type: ignore[arg-type]
        agents=None,  # type: ignore[arg-type]
        sealer=Sealer.generate(),
        keypairs=None,  # type: ignore[arg-type]
        node_ids=["zk_node-1", "zk_node-2", "zk_node-3", "client-1"],
    )  # fmt: skip

    def names(action: str, args: dict[str, Any]) -> list[str]:
        chosen = BY_NAME[action]
        return [" + ".join(layer) for layer in chosen.plan(ctx, chosen.decode(args)).describe()]

    assert names("stop", {})[:2] == ["stop:client", "stop:zk_node"]  # order 0 then 1
    scale_in = names("scale_in", {"role": "zk_node", "from": 3, "to": 1})
    assert scale_in[:4] == ["mark-leaving", "destroy-leaving", "scale_in", "stop-leaving"]
    delete = names("delete", {"was": "active"})
    assert delete[:3] == ["destroy:zk_node", "stop:client", "stop:zk_node"]
    native = dataclasses.replace(
        ctx,
        cluster=ctx.cluster.model_copy(
            update={"app": ctx.cluster.app.model_copy(update={"profile": "native"})}
        ),
    )
    chosen = BY_NAME["stop"]
    assert [" + ".join(x) for x in chosen.plan(native, chosen.decode({})).describe()][:2] == [
        "stop:zk_node",
        "stop:client",
    ]
