"""Custom services on the simulator: parameters reach chosen nodes, failures leave the cluster active.

The web role of the demo app gets two custom services: ``note`` writes its parameters into files
in the VM root (read here from the host), and ``boom`` always fails. A password parameter reaches
the node and nowhere else: not the job record in etcd, not its results, not the API's view.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import struct
import termios
from pathlib import Path
from typing import Any

import pytest
from e2e_cloud import Cloud, demo_app
from test_cli_job_exits import PITRIX, Cli, cli, failed  # noqa: F401 (cli: the fixture)
from test_lifecycle import expect
from test_ssh_channel import full_cloud, kill_agent  # noqa: F401 (full_cloud: the fixture)

from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.keys import job_key
from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.recovery import RecoveryPolicy
from pitrix.runtime.service import InvalidRequest, RuntimeService
from pitrix.store import Store

pytestmark = pytest.mark.e2e

PASSWORD = "s3cret pw 'with' $quotes"  # shell-quoting must carry it intact


def app_with_services() -> dict[str, Any]:
    app = demo_app()
    web = app["roles"][0]
    web["custom_services"] = {
        "note": {
            "description": "write the parameters into note.txt",
            "cmd": 'printf "%s x%s\\n" "$WORD" "$COUNT" > note.txt && printf "%s" "$SECRET" > secret.txt '
            '&& echo "noted $WORD with $SECRET"',
            "timeout": 30,
            "params": {
                "WORD": {"type": "string", "default": "hello"},
                "COUNT": {"type": "integer", "default": 1, "min": 1, "max": 5},
                "SECRET": {"type": "password"},
            },
        },
        "boom": {"cmd": "echo broken on purpose; exit 3", "timeout": 30, "nodes_to_execute_on": 1},
    }
    return app


async def test_custom_services_run_with_their_parameters_on_chosen_nodes(cloud: Cloud, store: Store) -> None:
    service = cloud.service
    cluster, _ = await service.create_cluster(
        owner="o", runtime="sim", app=app_with_services(), counts={"web": 3, "lb": 0}
    )
    cid = cluster.id
    created = await expect(service, cid, "active")
    nodes = {n.node_id: n for n in await service.nodes(cid)}

    # refused before anything runs, naming the field
    for body, message in [
        ({"name": "nope"}, "name: the app has no custom service 'nope' (has boom, note)"),
        ({"name": "note", "params": {"COUNT": 9}}, "params.COUNT: 9 is above the maximum 5"),
        ({"name": "note", "params": {"COLOUR": "red"}}, "params.COLOUR: 'note' has no parameter"),
        ({"name": "note", "nodes": ["web-9"]}, "nodes: the cluster has no running node 'web-9'"),
        ({"name": "note", "roles": ["lb"]}, "roles: role 'lb' has no custom service 'note'"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            await service.act(cid, "service", body)
        assert str(caught.value).startswith(message), str(caught.value)
    assert (await service.get_cluster(cid)).job_id == created.job_id

    # on two chosen nodes, with the parameters given (COUNT) and defaulted (WORD)
    job = await service.act(
        cid,
        "service",
        {"name": "note", "params": {"COUNT": 4, "SECRET": PASSWORD}, "nodes": ["web-3", "web-1"]},
    )
    await expect(service, cid, "active")
    done = await service.get_job(cid, job.id)
    assert done.status == "successful", done.error
    assert sorted(done.results) == ["web-1", "web-3"]
    for node_id in ("web-1", "web-3"):
        iid = nodes[node_id].instance_id
        assert cloud.vm_file(iid, "note.txt") == "hello x4\n"
        assert cloud.vm_file(iid, "secret.txt") == PASSWORD
        result = done.results[node_id]
        assert (result["status"], result["exit_code"]) == ("successful", 0)
        assert result["output_tail"].strip() == "noted hello with ******"  # the echoed password hidden
    with pytest.raises(FileNotFoundError):
        cloud.vm_file(nodes["web-2"].instance_id, "note.txt")
    raw = await store.get(job_key(cid, job.id))
    assert raw is not None and PASSWORD.encode() not in raw.value
    record = await service.metadata.get("o", "sim")
    assert record is not None
    for node_id in ("web-1", "web-3"):  # a command holding a password does not stay in metad
        assert not await service.metadata.client(record).get_data(
            f"/clusters/{cid}/cmd/{nodes[node_id].instance_id}"
        )
    assert PASSWORD not in done.model_dump_json()  # a view: the sealed value as ******

    # every node of the role by default, a new value for WORD
    job = await service.act(cid, "service", {"name": "note", "params": {"WORD": "bye"}})
    await expect(service, cid, "active")
    done = await service.get_job(cid, job.id)
    assert done.status == "successful" and sorted(done.results) == ["web-1", "web-2", "web-3"]
    assert {cloud.vm_file(n.instance_id, "note.txt") for n in nodes.values() if n.role == "web"} == {
        "bye x1\n"
    }

    # a failing service: the job fails with each node's outcome, the cluster stays active
    job = await service.act(cid, "service", {"name": "boom"})
    after = await expect(service, cid, "active")
    failed = await service.get_job(cid, job.id)
    assert failed.status == "failed"
    assert list(failed.results) == ["web-1"]  # nodes_to_execute_on: 1
    result = failed.results["web-1"]
    assert (result["status"], result["exit_code"]) == ("failed", 3)
    assert "broken on purpose" in result["output_tail"]
    assert after.last_error is not None and "web-1 exit 3: broken on purpose" in after.last_error

    # and the next action goes through, a stopped cluster refuses services
    await service.stop_cluster(cid)
    await expect(service, cid, "stopped")
    with pytest.raises(LifecycleError, match="cannot service a cluster that is stopped"):
        await service.act(cid, "service", {"name": "note"})
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")


async def test_the_cli_runs_a_service_and_prints_each_node_s_result(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    app = cli.spec("services", app_with_services())
    code, out, err = await cli(
        "clusters", "create", "-f", app, "--runtime", "sim", "--count", "web=2", "--count", "lb=0"
    )
    assert code == 0, (out, err)
    cid = out.split(":")[0]
    code, out, err = await cli("clusters", "show", cid)
    assert code == 0, err
    assert "custom services:" in out and "note             roles: web  write the parameters" in out, out
    assert "-p COUNT=<integer> (default 1)" in out and "-p SECRET=<password>" in out, out

    secret = tmp_path / "secret"
    secret.write_text(PASSWORD + "\n")
    code, out, err = await cli(
        "clusters", "service", cid, "note", "-p", "WORD=cli", "-p", "COUNT=2",
        "--param-file", f"SECRET={secret}", "--nodes", "web-2",
    )  # fmt: skip
    assert code == 0 and err == "", (out, err)
    assert "  results:\n    web-2        successful exit 0\n      | noted cli with ******" in out, out
    assert PASSWORD not in out

    code, out, err = await cli("clusters", "service", cid, "note", "-p", "COUNT=9")
    assert code == 2 and "params.COUNT: 9 is above the maximum 5" in err, (out, err)

    code, out, err = await cli("clusters", "service", cid, "boom")
    failed(code, err, "service", "service:boom", "web-1 exit 3: broken on purpose", "active")
    assert "    web-1        failed     exit 3\n      | broken on purpose" in out, out
    await look_at_nodes(cli, cid, tmp_path)
    code, out, err = await cli("clusters", "delete", cid)
    assert code == 0, (out, err)


async def look_at_nodes(run: Cli, cid: str, workdir: Path) -> None:
    """``nodes logs/exec`` on the same cluster: through each node's agent, its output and exit code."""
    # the agent's own log: it logged this very command starting before the tail ran
    code, out, err = await run("nodes", "logs", cid, "web-2", "--lines", "3")
    assert code == 0 and err == "", (out, err)
    assert len(out.splitlines()) == 3 and '"command started"' in out and '"logs-' in out, out
    code, out, err = await run("nodes", "logs", cid, "web-2", "--file", "/note.txt")
    assert (code, out, err) == (0, "cli x2\n", ""), (out, err)
    code, out, err = await run("nodes", "logs", cid, "web-1", "--file", "/note.txt")
    assert code == 66 and err == "/note.txt: no such readable file on this node\n", (out, err)
    code, out, err = await run(
        "nodes", "exec", cid, "web-1", "--", "sh", "-c", "echo out; echo err >&2; exit 4"
    )
    assert (code, out, err) == (4, "out\n", "err\n")
    code, out, err = await run("-o", "json", "nodes", "exec", cid, "web-2", "--", "cat", "note.txt")
    assert code == 0, err
    answer = json.loads(out)
    assert (answer["node"], answer["exit_code"], answer["stdout"], answer["truncated"]) == (
        "web-2",
        0,
        "cli x2\n",
        False,
    )
    code, out, err = await run("nodes", "exec", "--timeout", "700", cid, "web-1", "--", "true")
    assert code == 2 and "timeout: must be a number of seconds from 1 to 600 [timeout]" in err, (out, err)
    code, out, err = await run("nodes", "exec", cid, "web-9", "--", "true")
    assert code == 4 and "has no node 'web-9' (has web-1, web-2)" in err, (out, err)
    audit = (workdir / "pitrixd.log").read_text()
    assert "node command requested" in audit and "echo out; echo err" in audit
    await shell_on_nodes(run, cid)


async def _spawn_cli(run: Cli, *args: str, **streams: Any) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITRIX_")}
    env["PITRIX_CONFIG"] = str(run.config)
    return await asyncio.create_subprocess_exec(PITRIX, *args, env=env, **streams)


async def shell_on_nodes(run: Cli, cid: str) -> None:
    """``nodes ssh`` on the same cluster, through pitrixd's own SSH session to the node."""
    # stdin not a terminal: a pipe to the node's shell; its stdout, stderr and exit status are ours
    piped = await _spawn_cli(
        run, "nodes", "ssh", cid, "web-2",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    script = b"cat note.txt; echo oops >&2; exit 3\n"
    out, err = await asyncio.wait_for(piped.communicate(script), 120)
    assert (piped.returncode, out, err) == (3, b"cli x2\n", b"oops\n"), (out, err)

    # on a terminal (a pty here): the simulator's SSH server grants no PTY, so the local terminal
    # stays as it is (line by line, echoed) and is exactly as it was afterwards
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    before = termios.tcgetattr(slave)
    try:
        shell = await _spawn_cli(run, "nodes", "ssh", cid, "web-1", stdin=slave, stdout=slave, stderr=slave)
        os.write(master, b"echo pty-$((1+2))\nexit 5\n")
        assert await asyncio.wait_for(shell.wait(), 120) == 5
        assert termios.tcgetattr(slave) == before
        os.set_blocking(master, False)
        seen = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(master, 65536):
                seen += chunk
        assert b"pty-3" in seen and b"Traceback" not in seen, seen
    finally:
        os.close(master)
        os.close(slave)

    code, out, err = await run("nodes", "ssh", cid, "web-9")
    assert code == 4 and "has no node 'web-9'" in err, (out, err)
    audit = (run.workdir / "pitrixd.log").read_text()
    ended = [json.loads(line) for line in audit.splitlines() if '"node shell ended"' in line]
    assert [(e["node"], e["exit_status"], e["bytes_in"] > 0) for e in ended] == [
        ("web-2", 3, True),
        ("web-1", 5, True),
    ]


async def test_a_silent_agent_s_node_runs_the_service_over_ssh(full_cloud: Cloud) -> None:  # noqa: F811
    """Channel ssh: web-1's agent is killed; its part of the service runs over SSH with the same
    parameters (recorded with ``via``), web-2's live agent runs its own."""
    cloud, service = full_cloud, full_cloud.service
    cluster, _ = await service.create_cluster(
        owner="o1", runtime="sim", app=app_with_services(), counts={"web": 2, "lb": 0}, channel="ssh"
    )
    cid = cluster.id
    await expect(service, cid, "active")
    nodes = {n.node_id: n for n in await service.nodes(cid)}
    web1 = nodes["web-1"]
    record = await service.metadata.get("o1", "sim")
    assert record is not None
    client = service.metadata.client(record)
    kill_agent(web1.instance_id)
    agents = AgentStatus(client, cid)
    await agents.start()
    try:  # the view replayed, then the heartbeat's lease ran out
        await agents.wait_for(lambda _: bool(agents.applied(web1.instance_id)), 60)
        await agents.wait_for(lambda _: not agents.has_heartbeat(web1.instance_id), 60)
    finally:
        await agents.close()

    job = await service.act(cid, "service", {"name": "note", "params": {"WORD": "ssh", "SECRET": PASSWORD}})
    await expect(service, cid, "active")
    done = await service.get_job(cid, job.id)
    assert done.status == "successful", done.error
    for node in nodes.values():
        assert cloud.vm_file(node.instance_id, "note.txt") == "ssh x1\n"
        assert cloud.vm_file(node.instance_id, "secret.txt") == PASSWORD
        assert done.results[node.node_id]["output_tail"].strip() == "noted ssh with ******"
    via = json.loads(
        await client.get_data(f"/_pitrix/status/{cid}/{web1.instance_id}/cmd/{job.id}-note-web-1")
    )
    assert via["via"] == "ssh" and via["status"] == "successful"
    await service.delete_cluster(cid)
    await expect(service, cid, "deleted")


async def test_a_service_resumed_after_a_restart_runs_its_command_once(cloud: Cloud, store: Store) -> None:
    """pitrixd stops while the nodes run the command; the one that takes over waits for the results
    of the commands already handed out instead of handing them out (and running them) again."""
    service = cloud.service
    app = app_with_services()
    app["roles"][0]["custom_services"]["slow"] = {
        "cmd": "echo run >> runs.txt; sleep 3; echo done",
        "timeout": 30,
    }
    cluster, _ = await service.create_cluster(owner="o", runtime="sim", app=app, counts={"web": 2, "lb": 0})
    cid = cluster.id
    await expect(service, cid, "active")
    nodes = [n for n in await service.nodes(cid) if n.role == "web"]
    record = await service.metadata.get("o", "sim")
    assert record is not None
    job = await service.act(cid, "service", {"name": "slow"})
    agents = AgentStatus(service.metadata.client(record), cid)
    await agents.start()
    try:  # every node has started the command
        await agents.wait_for(
            lambda _: all(
                (agents.command_result(n.instance_id, f"{job.id}-slow-{n.node_id}") or {}).get("status")
                == "executing"
                for n in nodes
            ),
            60,
        )
    finally:
        await agents.close()
    await service.stop()

    second = RuntimeService(store, recovery=RecoveryPolicy(enabled=False), sealer=service.sealer)
    await second.start()
    try:
        await expect(second, cid, "active")
        done = await second.get_job(cid, job.id)
        assert done.status == "successful", done.error
        for node in nodes:
            assert cloud.vm_file(node.instance_id, "runs.txt") == "run\n"  # once, not twice
            assert done.results[node.node_id]["output_tail"].strip() == "done"
        await second.delete_cluster(cid)
        await expect(second, cid, "deleted")
    finally:
        await second.stop()
