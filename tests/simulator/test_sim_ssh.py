"""SSH into simulated VMs with asyncssh as the client: keys, host-key pinning, real processes."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from simulator.cloud import Simulator
from simulator.processes import vm_pids, wait_exit
from simulator.testing import admin, call, pid_alive, wait_job


async def new_keypair(sim: Simulator) -> tuple[str, asyncssh.SSHKey]:
    reply = await call(sim, "CreateKeyPair", {"keypair_name": "ops", "encrypt_method": "ssh-ed25519"})
    assert reply["ret_code"] == 0, reply
    return reply["keypair_id"], asyncssh.import_private_key(reply["private_key"])


async def run_vm(sim: Simulator, keypair: str | None, userdata: str = "") -> dict[str, Any]:
    params: dict[str, object] = {"image_id": "pitrix-metadata", "instance_name": "ssh", "vxnets.1": "vxnet-0"}
    if keypair:
        params.update(login_mode="keypair", login_keypair=keypair)
    else:
        params.update(login_mode="passwd", login_passwd="Secret123")
    if userdata:
        params.update(
            need_userdata=1, userdata_type="exec", userdata_value=base64.b64encode(userdata.encode()).decode()
        )
    reply = await call(sim, "RunInstances", params)
    assert reply["ret_code"] == 0, reply
    assert await wait_job(sim, reply["job_id"]) == "successful"
    [item] = (await call(sim, "DescribeInstances", {"instances.1": reply["instances"][0]}))["instance_set"]
    return dict(item)


def pinned(item: dict[str, Any]) -> asyncssh.SSHKnownHosts:
    """known_hosts holding exactly the host key the cloud published for this instance."""
    ip = item["vxnets"][0]["private_ip"]
    return asyncssh.import_known_hosts(f"[{ip}]:{item['ssh_port']} {item['ssh_host_key']}\n")


async def connect(item: dict[str, Any], key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
    return await asyncio.wait_for(
        asyncssh.connect(
            item["vxnets"][0]["private_ip"],
            item["ssh_port"],
            username="root",
            client_keys=[key],
            known_hosts=pinned(item),
            agent_path=None,
        ),
        15.0,
    )


async def console(sim: Simulator, iid: str) -> tuple[int, dict[str, Any]]:
    return await admin(sim, "GET", f"/_sim/instances/{iid}/console")


async def test_login_with_the_injected_key_runs_commands_in_the_vm(sim: Simulator) -> None:
    kid, key = await new_keypair(sim)
    item = await run_vm(sim, kid)
    iid, ip = item["instance_id"], item["vxnets"][0]["private_ip"]
    assert item["ssh_port"] == 2222 and item["ssh_host_key"].startswith("ssh-ed25519 ")
    async with await connect(item, key) as conn:
        result = await conn.run('echo "$PITRIX_VM_ID $PITRIX_VM_IP"; pwd; echo oops >&2; exit 3')
    root = sim.fleet.vms_dir / iid / "root"
    assert result.exit_status == 3
    assert result.stdout == f"{iid} {ip}\n{root}\n"
    assert result.stderr == "oops\n"


async def test_console_shows_the_host_key_clients_pin(sim: Simulator) -> None:
    kid, _ = await new_keypair(sim)
    item = await run_vm(sim, kid)
    status, body = await console(sim, item["instance_id"])
    assert status == 200 and body["ssh_host_key"] == item["ssh_host_key"] and body["ssh_port"] == 2222
    assert "-----BEGIN SSH HOST KEY KEYS-----" in body["output"]
    assert item["ssh_host_key"] in body["output"]
    status, body = await console(sim, "i-nothere0")
    assert status == 404 and "i-nothere0" in body["error"]


async def test_a_wrong_host_key_or_an_unattached_key_is_refused(sim: Simulator) -> None:
    kid, key = await new_keypair(sim)
    item = await run_vm(sim, kid)
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(item, stranger)
    impostor = dict(item, ssh_host_key=stranger.export_public_key("openssh").decode().strip())
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await connect(impostor, key)


async def test_cat_writes_a_file_under_the_root_byte_for_byte(sim: Simulator) -> None:
    kid, key = await new_keypair(sim)
    item = await run_vm(sim, kid)
    payload = bytes(range(256)) * 1000
    async with await connect(item, key) as conn:
        result = await conn.run("mkdir -p etc/app && cat > etc/app/blob", input=payload, encoding=None)
        assert result.exit_status == 0
        echoed = await conn.run("cat etc/app/blob", encoding=None)
    assert (sim.fleet.vms_dir / item["instance_id"] / "root/etc/app/blob").read_bytes() == payload
    assert echoed.stdout == payload


async def test_ssh_commands_are_vm_processes_that_stop_kills(sim: Simulator) -> None:
    kid, key = await new_keypair(sim)
    item = await run_vm(sim, kid)
    iid = item["instance_id"]
    async with await connect(item, key) as conn:
        result = await conn.run("setsid sleep 600 > /dev/null 2>&1 < /dev/null & echo $!")
    pid = int(str(result.stdout).strip())
    assert vm_pids({iid}).get(pid) == iid
    reply = await call(sim, "StopInstances", {"instances.1": iid})
    assert await wait_job(sim, reply["job_id"]) == "successful"
    assert not pid_alive(pid)
    with pytest.raises(OSError):
        await connect(item, key)  # a stopped VM answers nothing


async def test_host_key_survives_stop_and_start(sim: Simulator) -> None:
    kid, key = await new_keypair(sim)
    item = await run_vm(sim, kid)
    iid = item["instance_id"]
    for action in ("StopInstances", "StartInstances"):
        reply = await call(sim, action, {"instances.1": iid})
        assert await wait_job(sim, reply["job_id"]) == "successful"
    [again] = (await call(sim, "DescribeInstances", {"instances.1": iid}))["instance_set"]
    assert again["ssh_host_key"] == item["ssh_host_key"]
    async with await connect(again, key) as conn:
        assert (await conn.run("echo back")).stdout == "back\n"


async def test_attach_and_detach_take_effect_on_the_next_login(sim: Simulator) -> None:
    item = await run_vm(sim, None)
    iid = item["instance_id"]
    kid, key = await new_keypair(sim)
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(item, key)
    reply = await call(sim, "AttachKeyPairs", {"keypairs.1": kid, "instances.1": iid})
    assert await wait_job(sim, reply["job_id"]) == "successful"
    async with await connect(item, key) as conn:
        assert (await conn.run("true")).exit_status == 0
    reply = await call(sim, "DetachKeyPairs", {"keypairs.1": kid, "instances.1": iid})
    assert await wait_job(sim, reply["job_id"]) == "successful"
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(item, key)


async def test_a_dropped_session_kills_its_command(sim: Simulator) -> None:
    kid, key = await new_keypair(sim)
    item = await run_vm(sim, kid)
    iid = item["instance_id"]
    conn = await connect(item, key)
    process = await conn.create_process("echo $$; exec sleep 600")
    pid = int((await asyncio.wait_for(process.stdout.readline(), 15.0)).strip())
    assert vm_pids({iid}).get(pid) == iid
    conn.abort()
    assert await wait_exit([pid], 15.0) == []


def test_pinned_known_hosts_is_per_port(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode().split()
    item = {"vxnets": [{"private_ip": "127.150.0.2"}], "ssh_port": 2222, "ssh_host_key": " ".join(key[:2])}
    assert pinned(item).match("127.150.0.2", "127.150.0.2", 2222)[0]
