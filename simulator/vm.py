"""One simulated VM: an address, a root directory holding a copy of its image, and real processes.

Booting copies the image (first boot only), makes the SSH host key (first boot only), writes the
userdata where QingCloud puts each kind of it (simulator/userdata.py) and runs the script it makes
(``exec``: ``/etc/rc.local`` by default) with ``sh``, as an image runs rc.local at every boot.
The VM counts as running once userdata has started; what userdata starts (agents, daemons) is the
VM's business, found again by its ``PITRIX_VM_ID`` marker when the VM is stopped or terminated.

A light VM runs no process at all: its userdata is written but not run, and if its root holds an
agent config (``etc/pitrix/agent.toml``, from the image or pushed over SSH before a restart) a
pitrix-agent runs for it as a task in the simulator's own event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncssh

from pitrix.logs import get_logger
from simulator.light_agent import LightAgent
from simulator.processes import Spawned, kill_vm_processes, spawn_script
from simulator.sandbox import (
    enter_command,
    inside_environ,
    net_library,
    prepare_root,
    spawn_sandboxed,
    wait_ready,
)
from simulator.ssh import load_host_key
from simulator.userdata import DATA_DIR, EXEC_FILE, Userdata, materialize

USERDATA_PATH = EXEC_FILE  # where an ``exec`` userdata goes by default: the script boot runs
USERDATA_LOG = "var/log/userdata.log"
SSH_PORT = 2222


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def vm_environ(root: Path, instance_id: str, ip: str) -> dict[str, str]:
    """The whole environment of a VM process: the contract's variables and the simulator's PATH.

    The simulator's PYTHONPATH too, when it has one: a VM's pitrix-agent and pitrix-metad must be
    the code the simulator and pitrixd run (a source tree ahead of the installed package); and its
    PITRIX_ETCD_BINARY.
    """
    python_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {
        "PATH": f"{python_dir}{os.pathsep}{path}" if path else python_dir,
        "PITRIX_VM_ROOT": str(root),
        "PITRIX_VM_ID": instance_id,
        "PITRIX_VM_IP": ip,
        "HOME": str(root / "root"),
    }
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    # And the etcd its metadata VMs' metads run (pitrix.store.embedded's PITRIX_ETCD_BINARY): the
    # tests of metadata clusters of several ask for Debian's 3.4, which a VM must get too.
    if os.environ.get("PITRIX_ETCD_BINARY"):
        env["PITRIX_ETCD_BINARY"] = os.environ["PITRIX_ETCD_BINARY"]
    return env


def _copy_image(image: Path, root: Path) -> None:
    shutil.copytree(image, root, symlinks=True, dirs_exist_ok=True)
    for sub in ("root", "var/log", "etc/qingcloud/userdata", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)


def write_hardware(root: Path, cpu: int, memory: int) -> None:
    """What the guest's kernel would tell it of its hardware, where Linux puts it: one
    ``processor`` stanza per CPU in ``<root>/proc/cpuinfo``, ``MemTotal`` in ``<root>/proc/meminfo``.
    Written at every boot, so a resize (of a stopped VM) shows from the next one."""
    proc = root / "proc"
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "cpuinfo").write_text(
        "".join(f"processor\t: {n}\nmodel name\t: pitrix-sim\n\n" for n in range(cpu))
    )
    (proc / "meminfo").write_text(f"MemTotal:       {memory * 1024} kB\n")


@dataclass
class VM:
    instance_id: str
    name: str
    image_id: str
    image_dir: Path
    ip: str
    home: Path  # <state>/vms/<instance_id>
    cpu: int = 1
    memory: int = 1024
    vxnet_id: str = "vxnet-0"
    login_mode: str = "passwd"
    keypair_ids: list[str] = field(default_factory=list)  # given at creation; the book has the current
    userdata: bytes | None = None
    # QingCloud's userdata kind and places (simulator/userdata.py); OpenStack's user_data is exec.
    userdata_kind: str = "exec"
    userdata_dir: str = DATA_DIR
    userdata_file: str = EXEC_FILE
    status: str = "pending"
    transition_status: str = "creating"
    create_time: str = field(default_factory=now_iso)
    status_time: str = field(default_factory=now_iso)
    terminate_time: str = ""
    boots: int = 0
    light: bool = False
    sandbox: bool = False  # the image asks for a sandbox (simulator/sandbox.py): its root is "/"
    shared_dirs: tuple[str, ...] = ()  # host directories a sandboxed VM sees (the volumes)
    preload: str = ""  # a sandboxed VM's address library (simulator/sandbox_net.c), once built
    crashed: bool = False  # a crash fault: processes dead, SSH silent, status still "running"
    cut_off: bool = False  # a metadata cut fault: the agent is frozen until healed
    command_delay: float = 0.0  # the "slow commands" fault, seconds before each SSH command
    host_key: asyncssh.SSHKey | None = field(default=None, repr=False)
    agent: LightAgent | None = field(default=None, repr=False)
    _userdata_proc: Spawned | None = field(default=None, repr=False)
    _reaper: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def root(self) -> Path:
        return self.home / "root"

    def set_status(self, status: str, transition: str = "") -> None:
        self.status = status
        self.transition_status = transition
        self.status_time = now_iso()

    async def boot(self) -> None:
        """Copy the image in (first boot) and start userdata; the VM is running afterwards."""
        log = get_logger("simulator.vm", instance_id=self.instance_id, ip=self.ip)
        if self.boots == 0:
            await asyncio.to_thread(_copy_image, self.image_dir, self.root)
        if self.host_key is None:
            self.host_key = await asyncio.to_thread(load_host_key, self.root)
        await asyncio.to_thread(write_hardware, self.root, self.cpu, self.memory)
        self.boots += 1
        self.crashed = False
        script = await asyncio.to_thread(self._write_userdata)
        if self.light:
            self.agent = await LightAgent.start_if_configured(self.root, self.environ())
        elif self.sandbox:
            await self._start_sandbox(script)
        elif script is not None:
            await self._start_userdata(script)
        self.set_status("running")
        log.info("vm.running", boot=self.boots, image=self.image_id)

    async def _start_userdata(self, relative: str) -> None:
        script = self.root / relative
        # A session of its own: a terminal's ^C to pitrix-sim must not reach the VMs directly.
        self._userdata_proc = spawn_script(script, self.root, self.environ(), self.root / USERDATA_LOG)
        self._reaper = asyncio.create_task(self._reap(self._userdata_proc), name=f"reap-{self.instance_id}")

    async def _start_sandbox(self, script: str | None) -> None:
        """A sandboxed VM always has its init (the machine is up even without userdata); the
        launcher's exit is userdata's, as for an ordinary VM."""
        await asyncio.to_thread(prepare_root, self.root, self.instance_id, self.ip, self.shared_dirs)
        self.preload = await asyncio.to_thread(net_library, self.home.parent.parent / "sandbox-net")
        self._userdata_proc, ready = spawn_sandboxed(
            root=self.root,
            home=self.home,
            hostname=self.instance_id,
            env=self.environ(),
            log=self.root / USERDATA_LOG,
            userdata="/" + script if script is not None else "",
            read_write=list(self.shared_dirs),
            read_only=(os.path.dirname(self.preload),) if self.preload else (),
        )
        self._reaper = asyncio.create_task(self._reap(self._userdata_proc), name=f"reap-{self.instance_id}")
        await asyncio.to_thread(wait_ready, ready)  # a sandbox that cannot be built fails the boot

    def enter_command(self) -> list[str]:
        """For a sandboxed VM: the argv prefix that runs a command inside it (raises if it is down)."""
        return enter_command(self.home, self.instance_id)

    def environ(self) -> dict[str, str]:
        # What it was booted with, as the cloud sized it (a resize shows from the next boot).
        sized = {"PITRIX_VM_CPU": str(self.cpu), "PITRIX_VM_MEMORY": str(self.memory)}
        environ = vm_environ(self.root, self.instance_id, self.ip) | sized
        return inside_environ(environ, self.preload) if self.sandbox else environ

    def _write_userdata(self) -> str | None:
        """Put this VM's userdata where its kind goes (simulator/userdata.py); the script boot
        runs (relative to the root), or None when there is nothing to run."""
        if self.userdata is None:
            return None
        form = Userdata(self.userdata_kind, self.userdata, self.userdata_dir, self.userdata_file)
        return materialize(self.root, form)

    async def userdata_finished(self) -> int | None:
        """The exit code of this boot's userdata once it has finished (None without userdata)."""
        if self._reaper is None or self._userdata_proc is None or self.userdata is None:
            return None
        proc = self._userdata_proc
        await asyncio.shield(self._reaper)
        return proc.returncode

    async def _reap(self, proc: Spawned) -> None:
        code = await proc.wait()
        get_logger("simulator.vm", instance_id=self.instance_id).info("vm.userdata_exited", exit_code=code)

    async def halt(self) -> int:
        """Kill every process of the VM (the disk stays); returns how many were signalled."""
        await self.stop_agent()
        killed = await kill_vm_processes({self.instance_id})
        await self.collect_userdata()
        return killed

    async def stop_agent(self) -> None:
        """End a light VM's in-process agent (full VMs' agents die with their processes)."""
        if self.agent is not None:
            agent, self.agent = self.agent, None
            await agent.stop()

    async def collect_userdata(self) -> None:
        """After a kill: collect the userdata shell's exit (it was one of the killed processes)."""
        if self._reaper is not None:
            await asyncio.wait([self._reaper], timeout=10.0)
            self._reaper = None
            self._userdata_proc = None

    def ledger_entry(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "name": self.name,
            "ip": self.ip,
            "image": self.image_id,
            "status": self.status,
            "light": self.light,
            "created": self.create_time,
            "terminated": self.terminate_time or None,
        }
