"""One light worker: a process of ``pitrix-sim --light --light-workers N`` running a share of the light VMs.

A light VM costs the simulator its SSH server (key exchanges, the in-process shell) and its
pitrix-agent (long-polls, renders, heartbeats); at a thousand clusters that work, all in the API
process's one loop, was what a benchmark measured instead of pitrixd. A worker runs those parts for
the VMs the API process gives it; the API process keeps the cloud's books (statuses, jobs, key
pairs, volumes) and tells the worker what changed.

The protocol is one JSON object per line: requests on the process's original stdin ``{"id", "op",
...}``, answers on its original stdout ``{"id", "ok": value}`` or ``{"id", "error": "..."}``; at start
both move to descriptors of their own and 0 and 1 become /dev/null and stderr, so no command a VM's
agent runs can read a request or write a false answer. Logs go to
stderr (the simulator's log). End of stdin ends the worker, after stopping its VMs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import asyncssh

from pitrix import aio, logs
from pitrix.logs import get_logger
from simulator.light_agent import LightAgent, start_once
from simulator.ssh import VmSshServer
from simulator.userdata import DATA_DIR, EXEC_FILE
from simulator.vm import VM

LINE_LIMIT = 64 * 1024 * 1024  # a request carries a VM's userdata


class LightHost:
    """The light VMs of one worker: each one's SSH server, agent, accepted keys and faults."""

    def __init__(self, ssh_port: int) -> None:
        self.ssh_port = ssh_port
        self.vms: dict[str, VM] = {}
        self.ssh: dict[str, VmSshServer] = {}
        self.keys: dict[str, list[asyncssh.SSHKey]] = {}
        self._log = get_logger("simulator.light_worker")

    async def boot(
        self,
        iid: str,
        ip: str,
        home: str,
        image_dir: str,
        boots: int,
        userdata: str | None,
        keys: list[str],
        delay: float,
        userdata_kind: str = "exec",
        userdata_dir: str = DATA_DIR,
        userdata_file: str = EXEC_FILE,
    ) -> str:
        """Boot (or boot again) a VM: its disk (first boot), agent and SSH; its public host key."""
        await self.halt(iid)
        vm = VM(
            instance_id=iid,
            name="",
            image_id="",
            image_dir=Path(image_dir),
            ip=ip,
            home=Path(home),
            userdata=None if userdata is None else base64.b64decode(userdata),
            userdata_kind=userdata_kind,
            userdata_dir=userdata_dir,
            userdata_file=userdata_file,
            light=True,
            boots=boots,
        )
        vm.command_delay = delay
        self.vms[iid] = vm
        self.set_keys(iid, keys)
        await vm.boot()
        assert vm.host_key is not None
        server = VmSshServer(
            instance_id=iid,
            ip=ip,
            port=self.ssh_port,
            root=vm.root,
            environ=vm.environ(),
            host_key=vm.host_key,
            accepted_keys=lambda: self.keys.get(iid, []),
            command_delay=lambda: vm.command_delay,
            light=True,
            start_agent=lambda config: self._start_agent(vm, config),
        )
        await server.start()
        self.ssh[iid] = server
        return vm.host_key.export_public_key("openssh").decode()

    async def _start_agent(self, vm: VM, config: str) -> str:
        vm.agent, error = await start_once(vm.agent, vm.cut_off, vm.root, vm.environ(), config)
        return error

    async def halt(self, iid: str) -> None:
        """SSH down and agent ended (a light VM has no process to kill); the disk stays."""
        server = self.ssh.pop(iid, None)
        if server is not None:
            await server.stop()
        vm = self.vms.get(iid)
        if vm is not None:
            await vm.stop_agent()
            vm.cut_off = False

    async def forget(self, iid: str) -> None:
        await self.halt(iid)
        self.vms.pop(iid, None)
        self.keys.pop(iid, None)

    def set_keys(self, iid: str, keys: list[str]) -> None:
        self.keys[iid] = [asyncssh.import_public_key(k) for k in keys]

    def delay(self, iid: str, seconds: float) -> None:
        vm = self.vms.get(iid)
        if vm is not None:
            vm.command_delay = seconds

    async def cut(self, iid: str) -> None:
        vm = self.vms[iid]
        vm.cut_off = True
        await vm.stop_agent()

    async def heal(self, iid: str) -> None:
        vm = self.vms[iid]
        vm.cut_off = False
        if iid in self.ssh and vm.agent is None:
            vm.agent = await LightAgent.start_if_configured(vm.root, vm.environ())

    async def rounds(self, iid: str, count: int, timeout: float) -> int:
        """Wait (at most ``timeout`` s) until the VM's agent has applied ``count`` rounds; how many
        it has. What a test awaits instead of polling the files an agent in another process writes."""
        vm = self.vms[iid]
        if vm.agent is None:
            raise RuntimeError(f"{iid}: no agent runs")
        async with asyncio.timeout(timeout):
            await vm.agent.agent.wait_rounds(count)
        return count

    def agents(self) -> int:
        """How many of this worker's VMs have a running agent."""
        return sum(1 for vm in self.vms.values() if vm.agent is not None and not vm.agent.task.done())

    async def stop(self) -> None:
        await asyncio.gather(*(self.halt(iid) for iid in list(self.vms)), return_exceptions=True)

    async def handle(self, request: dict[str, Any]) -> Any:
        op = request.pop("op")
        if op == "boot":
            return await self.boot(**request)
        if op == "halt":
            return await self.halt(request["iid"])
        if op == "forget":
            return await self.forget(request["iid"])
        if op == "keys":
            return self.set_keys(request["iid"], request["keys"])
        if op == "delay":
            return self.delay(request["iid"], float(request["seconds"]))
        if op == "cut":
            return await self.cut(request["iid"])
        if op == "heal":
            return await self.heal(request["iid"])
        if op == "rounds":
            return await self.rounds(request["iid"], int(request["count"]), float(request["timeout"]))
        if op == "agents":
            return self.agents()
        raise ValueError(f"op: unknown operation {op!r}")


async def serve(host: LightHost, in_fd: int, out_fd: int) -> None:
    """Answer requests from stdin until it ends; each request runs as a task of its own."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(in_fd, "rb", buffering=0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    log = get_logger("simulator.light_worker", pid=os.getpid())
    tasks: set[asyncio.Task[None]] = set()

    async def answer(request: dict[str, Any]) -> None:
        rid, op = request.pop("id"), request.get("op")
        try:
            reply: dict[str, Any] = {"id": rid, "ok": await host.handle(request)}
        except Exception as exc:  # the VM's failure is the caller's to report (a failed job)
            log.warning("light_worker.request_failed", op=op, error=str(exc))
            reply = {"id": rid, "error": f"{type(exc).__name__}: {exc}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()

    log.info("light_worker.started")
    while line := await reader.readline():
        task = asyncio.create_task(answer(json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=10.0)
    await host.stop()
    log.info("light_worker.stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator.light_worker", description=__doc__)
    parser.add_argument("--ssh-port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    # The requests and answers get descriptors of their own: fd 0 becomes /dev/null and fd 1 stderr,
    # so a command a VM's agent runs (it inherits both) can neither eat a request nor forge an answer.
    in_fd, out_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    logs.configure(args.log_level)
    aio.run(serve(LightHost(args.ssh_port), in_fd, out_fd))


if __name__ == "__main__":
    main()
