"""A volume in a sandboxed VM is a bind mount, as a mounted disk is on a real VM.

The node-side prepare (the runtime's own command, run inside the VM as the agent runs it) binds
the attached volume's device entry at the mount point and records it in the VM's ``/etc/fstab``;
``chown -R`` then reaches the volume's own directory, so a daemon running as another user can
write its data (the public etcd package's case: a link would have been chowned instead). The
sandbox mounts the entry again at the next boot. One VM, no cluster.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pitrix.runtime.spec import Volume
from pitrix.runtime.volume_prepare import prepare_command
from simulator.cloud import Simulator
from simulator.images import SANDBOX_MARKER
from simulator.sandbox import enter_command
from simulator.testing import call, random_network, wait_job

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxed VMs need root (namespaces, overlays)")


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    root = tmp_path / "images" / "boxed"
    (root / SANDBOX_MARKER).parent.mkdir(parents=True)
    (root / SANDBOX_MARKER).write_text("")
    simulator = Simulator(tmp_path / "sim", network=random_network(), images_dirs=[tmp_path / "images"])
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def inside(sim: Simulator, iid: str, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` run in the VM (its namespaces and root) as its agent runs a service command."""
    vm = sim.fleet.vm(iid)
    assert vm is not None
    argv = [*enter_command(vm.home, iid), "/bin/sh", "-c", command]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PITRIX_VM_ROOT": "/"}
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def act(sim: Simulator, action: str, params: dict[str, Any]) -> dict[str, Any]:
    reply = await call(sim, action, params)
    assert reply["ret_code"] == 0, reply
    assert await wait_job(sim, str(reply["job_id"]), timeout=30) == "successful"
    return reply


async def test_the_mount_point_is_a_bind_mount_that_comes_back_at_boot(sim: Simulator) -> None:
    run = await act(
        sim,
        "RunInstances",
        {"image_id": "boxed", "vxnets.1": "vxnet-0", "login_mode": "passwd", "login_passwd": "Secret123"},
    )
    [iid] = run["instances"]
    made = await act(sim, "CreateVolumes", {"size": 1, "volume_name": "data"})
    [vid] = made["volumes"]
    await act(sim, "AttachVolumes", {"volumes.1": vid, "instance": iid})
    data = sim.state_dir / "volumes" / vid / "data"
    prepare = prepare_command(Volume(size=1, mount_point="/var/lib/app"), ("/dev/vdb",))

    first = await inside(sim, iid, prepare)
    assert first.returncode == 0, first.stderr
    assert "bound at" in first.stdout
    again = await inside(sim, iid, prepare)  # a repeated step changes nothing
    assert again.returncode == 0 and "mounted already" in again.stdout, again.stderr
    owned = await inside(
        sim,
        iid,
        "test ! -L /var/lib/app && mountpoint -q /var/lib/app && chown -R nobody /var/lib/app"
        " && runuser -u nobody -- sh -c 'echo written > /var/lib/app/by-nobody'"
        " && grep -c ' /var/lib/app none bind,nofail ' /etc/fstab",
    )
    assert owned.returncode == 0, owned.stderr
    assert owned.stdout == "1\n"  # recorded once
    assert (data / "by-nobody").read_text() == "written\n"  # the volume's own directory
    assert data.stat().st_uid == pwd.getpwnam("nobody").pw_uid  # chown reached it, not a link

    # A bind entry whose source is a link out of the VM to a host directory is not honoured.
    outside = sim.state_dir.parent / "host-only"
    outside.mkdir()
    (outside / "secret").write_text("host's\n")
    planted = await inside(
        sim, iid, f"ln -s {outside} /escape && echo '/escape /mnt/escape none bind 0 0' >> /etc/fstab"
    )
    assert planted.returncode == 0, planted.stderr

    await act(sim, "StopInstances", {"instances.1": iid})
    await act(sim, "StartInstances", {"instances.1": iid})
    rebooted = await inside(sim, iid, "mountpoint -q /var/lib/app && cat /var/lib/app/by-nobody")
    assert rebooted.returncode == 0, rebooted.stderr
    assert rebooted.stdout == "written\n"
    escaped = await inside(sim, iid, "mountpoint -q /mnt/escape || echo not-mounted; ls /mnt/escape")
    assert escaped.stdout == "not-mounted\n", escaped
