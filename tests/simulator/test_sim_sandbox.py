"""Sandboxed VMs (images holding etc/pitrix-sim/sandbox): the VM root is ``/`` for its processes.

One VM shows the view (its own files at absolute paths, the host's system directories beneath
as overlays whose writes stay in the VM, its own host name and PID namespace, its address for
0.0.0.0), SSH landing in
it, the systemctl shim starting a unit as another user, and stop killing everything; a second
image that cannot be laid out fails its boot with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from simulator.appcenter_image import SHIMS, SHIMS_DIR
from simulator.cloud import Simulator
from simulator.images import SANDBOX_MARKER
from simulator.processes import vm_pids
from simulator.testing import call, random_network, wait_job

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxed VMs need root (namespaces, overlays)")

UNIT = """[Service]
User=nobody
Environment=WORD=sandboxed
ExecStart=/bin/sh -c 'echo "$$WORD" > /tmp/unit.out; exec sleep 600'
"""
USERDATA = """#!/bin/sh
echo "root=$PITRIX_VM_ROOT home=$HOME host=$(hostname) pid=$$"
cat /opt/app/hello
echo mine > /etc/mine.conf
systemctl start pause && systemctl is-active pause
/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[0])'
"""


def image(base: Path, name: str) -> Path:
    root = base / name
    (root / "etc/pitrix-sim").mkdir(parents=True)
    (root / SANDBOX_MARKER).write_text("")
    (root / "opt/app").mkdir(parents=True)
    (root / "opt/app/hello").write_text("hello from the image\n")
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/pause.service").write_text(UNIT)
    for shim, where in SHIMS.items():
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).write_bytes((SHIMS_DIR / shim).read_bytes())
        (root / where).chmod(0o755)
    return root


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    images = tmp_path / "images"
    image(images, "boxed")
    broken = image(images, "broken")
    (broken / "bin").mkdir()  # the host's /bin is a merged-usr link: the image cannot hold one
    simulator = Simulator(tmp_path / "sim", network=random_network(), images_dirs=[images])
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def run(sim: Simulator, image_id: str, keypair: str) -> tuple[str, dict[str, Any]]:
    reply = await call(
        sim,
        "RunInstances",
        {
            "image_id": image_id,
            "vxnets.1": "vxnet-0",
            "login_mode": "keypair",
            "login_keypair": keypair,
            "need_userdata": 1,
            "userdata_type": "exec",
            "userdata_value": base64.b64encode(USERDATA.encode()).decode(),
        },
    )
    assert reply["ret_code"] == 0, reply
    return reply["job_id"], reply


async def test_a_sandboxed_vm_sees_its_root_as_slash(sim: Simulator) -> None:
    keys = await call(sim, "CreateKeyPair", {"keypair_name": "ops", "encrypt_method": "ssh-ed25519"})
    job, reply = await run(sim, "boxed", keys["keypair_id"])
    assert await wait_job(sim, job) == "successful"
    iid = reply["instances"][0]
    vm = sim.fleet.vm(iid)
    assert vm is not None and await asyncio.wait_for(vm.userdata_finished(), 30) == 0
    log = (vm.root / "var/log/userdata.log").read_text()
    assert f"root=/ home=/root host={iid} pid=2\n" in log  # PID 1 is the VM's init
    assert f"hello from the image\nactive\n{vm.ip}\n" in log  # 0.0.0.0 is the VM's own address
    assert (vm.root / "etc/mine.conf").read_text() == "mine\n"  # the overlay's upper layer is the VM's
    assert not on_host("/etc/mine.conf")
    assert (vm.root / "etc/hosts").read_text() == f"127.0.0.1\tlocalhost\n{vm.ip}\t{iid}\n"

    key = asyncssh.import_private_key(keys["private_key"])
    async with asyncssh.connect(vm.ip, 2222, username="root", client_keys=[key], known_hosts=None) as conn:
        done = await conn.run(
            "hostname; cat /tmp/unit.out; ps -o user= -C sleep; ls /proc/1/root/opt", timeout=20
        )
    assert done.exit_status == 0, done.stderr
    assert done.stdout == f"{iid}\nsandboxed\nnobody\napp\n"

    assert vm_pids({iid})
    stopped = await call(sim, "StopInstances", {"instances.1": iid})
    assert await wait_job(sim, stopped["job_id"]) == "successful"
    assert not vm_pids({iid})
    assert _rooted_at(vm.root) == []  # the unit's process (another user) died with the VM's namespace


def _rooted_at(root: Path) -> list[str]:
    """Live processes whose root directory is ``root`` (a sandboxed VM's, whatever their user)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/root") == str(root):
                found.append(pid)
        except OSError:
            continue
    return found


async def test_an_image_that_cannot_be_laid_out_fails_its_boot(sim: Simulator) -> None:
    keys = await call(sim, "CreateKeyPair", {"keypair_name": "ops", "encrypt_method": "ssh-ed25519"})
    job, reply = await run(sim, "broken", keys["keypair_id"])
    assert await wait_job(sim, job) == "failed"
    [job_record] = (await call(sim, "DescribeJobs", {"jobs.1": job}))["job_set"]
    assert "the image holds /bin" in job_record["error_msg"]
    [item] = (await call(sim, "DescribeInstances", {"instances.1": reply["instances"][0]}))["instance_set"]
    assert item["status"] == "stopped"


def on_host(path: str) -> bool:
    """Whether the host's own file system has ``path`` (a sandboxed VM's writes must not land there)."""
    return os.path.exists(path)
