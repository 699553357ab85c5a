"""Light mode: VMs without processes whose SSH is an in-process shell and whose agent is a task."""

from __future__ import annotations

import base64
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from simulator.cloud import Simulator
from simulator.processes import vm_pids
from simulator.testing import admin, call, random_network, wait_job

AGENT_TOML = """backend = "file"
file = ["/etc/values.yaml"]
confdir = "/etc/confd"
watch = true
"""


def write_image(images: Path) -> None:
    """An image whose agent (file backend) renders ``/etc/out.txt`` from ``/etc/values.yaml``."""
    root = images / "lightimg"
    for rel, text in {
        "etc/pitrix/agent.toml": AGENT_TOML,
        "etc/values.yaml": "greeting: hello\n",
        "etc/confd/conf.d/out.toml": (
            '[template]\nsrc = "out.tmpl"\ndest = "/etc/out.txt"\nkeys = ["/greeting"]\n'
        ),
        "etc/confd/templates/out.tmpl": '{{getv "/greeting"}} from light\n',
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture
async def light(tmp_path: Path) -> AsyncIterator[Simulator]:
    write_image(tmp_path / "images")
    sim = Simulator(tmp_path / "sim", network=random_network(), images_dirs=[tmp_path / "images"], light=True)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def boot(sim: Simulator, image: str, userdata: str = "") -> tuple[dict[str, Any], asyncssh.SSHKey]:
    kp = await call(sim, "CreateKeyPair", {"encrypt_method": "ssh-ed25519"})
    params: dict[str, object] = {
        "image_id": image,
        "vxnets.1": "vxnet-0",
        "login_mode": "keypair",
        "login_keypair": kp["keypair_id"],
    }
    if userdata:
        params.update(
            need_userdata=1, userdata_type="exec", userdata_value=base64.b64encode(userdata.encode()).decode()
        )
    run = await call(sim, "RunInstances", params)
    assert await wait_job(sim, run["job_id"]) == "successful"
    [item] = (await call(sim, "DescribeInstances", {"instances.1": run["instances"][0]}))["instance_set"]
    return item, asyncssh.import_private_key(kp["private_key"])


def connect(item: dict[str, Any], key: asyncssh.SSHKey) -> Any:
    ip = item["vxnets"][0]["private_ip"]
    known = asyncssh.import_known_hosts(f"[{ip}]:{item['ssh_port']} {item['ssh_host_key']}\n")
    return asyncssh.connect(ip, item["ssh_port"], username="root", client_keys=[key], known_hosts=known)


async def test_light_vm_runs_no_process_and_does_not_run_userdata(light: Simulator) -> None:
    item, _ = await boot(light, "demo", "#!/bin/sh\ntouch ran\n")
    iid = item["instance_id"]
    root = light.fleet.vms_dir / iid / "root"
    assert item["status"] == "running" and vm_pids({iid}) == {}
    assert (root / "etc/rc.local").read_text() == "#!/bin/sh\ntouch ran\n"  # exec: rc.local
    # Userdata may hold a bootstrap token: readable by the VM's root alone, as a real image keeps it.
    assert stat.S_IMODE((root / "etc/rc.local").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "etc/qingcloud/userdata").stat().st_mode) == 0o700
    assert not (root / "ran").exists()
    [entry] = light.ledger()
    assert entry["light"] is True


async def test_light_shell_command_set(light: Simulator) -> None:
    item, key = await boot(light, "demo")
    iid = item["instance_id"]
    root = light.fleet.vms_dir / iid / "root"
    async with connect(item, key) as conn:
        assert (await conn.run("hostname; echo a  b; pwd; id; uname")).stdout == (
            f"{iid}\na b\n/\nuid=0(root) gid=0(root) groups=0(root)\nLinux\n"
        )
        written = await conn.run("cat > /etc/app/conf && cat >> etc/app/conf", input="one\n")
        assert written.exit_status == 0
        assert (root / "etc/app/conf").read_text() == "one\n"
        assert (await conn.run("cat etc/app/conf")).stdout == "one\n"
        assert (await conn.run("cat", input="echoed")).stdout == "echoed"
        missing = await conn.run("cat nothere")
        assert missing.exit_status == 1 and "nothere" in str(missing.stderr)
        escape = await conn.run("cat ../../../../etc/passwd")
        assert escape.exit_status == 1 and "outside the VM" in str(escape.stderr)
        escape = await conn.run("cat > ../../outside", input="x")
        assert escape.exit_status == 1 and "outside the VM" in str(escape.stderr)
        assert not (root.parent.parent / "outside").exists()
        unknown = await conn.run("rm -rf /")
        assert unknown.exit_status == 127 and "rm: not found" in str(unknown.stderr)
        assert (await conn.run("false && echo no; echo yes")).stdout == "yes\n"
        assert (await conn.run("true; exit 7")).exit_status == 7
        assert (await conn.run("false")).exit_status == 1
        assert (await conn.run("echo 'unclosed")).exit_status == 2
    assert vm_pids({iid}) == {}


async def test_light_agent_runs_in_process_and_stops_with_the_vm(light: Simulator) -> None:
    item, key = await boot(light, "lightimg")
    iid = item["instance_id"]
    vm = light.fleet.vm(iid)
    assert vm is not None and vm.agent is not None
    await vm.agent.agent.wait_rounds(1)
    out = light.fleet.vms_dir / iid / "root/etc/out.txt"
    assert out.read_text() == "hello from light\n"

    status, _ = await admin(light, "POST", f"/_sim/instances/{iid}/cut")
    assert status == 200 and vm.agent is None
    status, _ = await admin(light, "POST", f"/_sim/instances/{iid}/heal")
    assert status == 200 and vm.agent is not None
    await vm.agent.agent.wait_rounds(1)

    async with connect(item, key) as conn:  # change the values over SSH, restart: the agent renders them
        await conn.run("cat > etc/values.yaml", input="greeting: bonjour\n")
    restart = await call(light, "RestartInstances", {"instances.1": iid})
    assert await wait_job(light, restart["job_id"]) == "successful"
    assert vm.agent is not None
    await vm.agent.agent.wait_until(lambda: out.read_text() == "bonjour from light\n")
    task = vm.agent.task
    stop = await call(light, "StopInstances", {"instances.1": iid})
    assert await wait_job(light, stop["job_id"]) == "successful"
    assert vm.agent is None and task.done()


async def test_crash_of_a_light_vm_ends_its_agent(light: Simulator) -> None:
    item, key = await boot(light, "lightimg")
    vm = light.fleet.vm(item["instance_id"])
    assert vm is not None and vm.agent is not None
    task = vm.agent.task
    status, _ = await admin(light, "POST", f"/_sim/instances/{item['instance_id']}/crash")
    assert status == 200 and vm.agent is None and task.done()
    with pytest.raises(OSError):
        async with connect(item, key):
            pass


async def test_a_bad_agent_config_fails_the_boot_naming_it(light: Simulator, tmp_path: Path) -> None:
    (tmp_path / "images/lightimg/etc/pitrix/agent.toml").write_text('backend = "file"\nwatch = "often"\n')
    kp = await call(light, "CreateKeyPair", {"encrypt_method": "ssh-ed25519"})
    run = await call(
        light,
        "RunInstances",
        {
            "image_id": "lightimg",
            "vxnets.1": "vxnet-0",
            "login_mode": "keypair",
            "login_keypair": kp["keypair_id"],
        },
    )
    assert await wait_job(light, run["job_id"]) == "failed"
    [job] = (await call(light, "DescribeJobs", {"jobs.1": run["job_id"]}))["job_set"]
    assert "watch" in job["error_msg"]


async def test_light_shell_files_and_the_agent_start(light: Simulator) -> None:
    """What pitrixd's SSH bootstrap sends a light VM: mkdir/touch/chmod, cat >, then the agent."""
    item, key = await boot(light, "demo")
    iid = item["instance_id"]
    root = light.fleet.vms_dir / iid / "root"
    async with connect(item, key) as conn:
        put = 'mkdir -p "${PITRIX_VM_ROOT:-}"/etc/x && touch "$PITRIX_VM_ROOT"/etc/x/k && chmod 600 /etc/x/k'
        assert (await conn.run(put + " && cat > /etc/x/k", input="secret")).exit_status == 0
        assert (root / "etc/x/k").read_text() == "secret"
        assert (root / "etc/x/k").stat().st_mode & 0o777 == 0o600
        assert (await conn.run("echo $PITRIX_VM_ID")).stdout == f"{iid}\n"
        start = "nohup pitrix-agent -config-file /etc/pitrix/agent.toml >> /var/log/a.log 2>&1 < /dev/null &"
        missing = await conn.run(start)
        assert missing.exit_status == 1 and "no such file" in str(missing.stderr)
        config = 'backend = "metad"\nnodes = ["http://127.0.0.1:9"]\nconfdir = "/etc/confd"\n'
        assert (await conn.run("cat > /etc/pitrix/agent.toml", input=config)).exit_status == 0
        assert (await conn.run(start)).exit_status == 0
        vm = light.fleet.vm(iid)
        assert vm is not None and vm.agent is not None
        first = vm.agent
        assert (await conn.run(start)).exit_status == 0  # one agent per VM: started once
        assert vm.agent is first
        assert vm_pids({iid}) == {}  # in-process, still no process


async def test_the_metadata_image_boots_as_a_full_vm_in_a_light_fleet(light: Simulator) -> None:
    item, _ = await boot(light, "pitrix-metadata", "#!/bin/sh\ntouch ran\n")
    root = light.fleet.vms_dir / item["instance_id"] / "root"
    [entry] = light.ledger()
    assert entry["light"] is False
    vm = light.fleet.vm(item["instance_id"])
    assert vm is not None
    assert await vm.userdata_finished() == 0 and (root / "ran").exists()
