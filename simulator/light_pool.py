"""The API process's side of ``--light-workers N``: N worker processes and which VM runs on which.

Each light VM is placed, at boot, on the live worker with the fewest VMs (so a cluster's nodes
spread over the workers); every later operation on it goes to that worker. A worker that dies
is reported once, naming its index, pid, exit status and the VMs it held; those VMs are down as
after a guest crash (the cloud still says ``running``; a restart, or stop and start, boots them on
a live worker), and a call that was in flight on it fails with :class:`WorkerDied`, which names
the same. With no live worker left, a boot fails saying so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from pitrix.logs import get_logger
from simulator.vm import VM

STOP_TIMEOUT = 15.0
LINE_LIMIT = 16 * 1024 * 1024

# Called once when a worker dies: (what happened, the instance ids it held).
OnDeath = Callable[[str, list[str]], None]


class WorkerDied(RuntimeError):
    """The light worker holding a VM is gone; the message says which, how and with which VMs."""


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process
    vms: set[str] = field(default_factory=set)
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    next_id: int = 0
    death: str = ""  # why it is gone; "" while it runs
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, op: str, **args: Any) -> Any:
        if self.death:
            raise WorkerDied(self.death)
        assert self.proc.stdin is not None
        self.next_id += 1
        rid = self.next_id
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[rid] = answer
        try:
            self.proc.stdin.write(json.dumps({"id": rid, "op": op, **args}).encode() + b"\n")
            await self.proc.stdin.drain()
        except (ConnectionError, BrokenPipeError):
            self.pending.pop(rid, None)
            await self.ended.wait()  # the reader names the death
            raise WorkerDied(self.death) from None
        try:
            return await answer
        finally:
            self.pending.pop(rid, None)

    def status(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": self.pid,
            "alive": not self.death,
            "exit_status": self.proc.returncode,
            "error": self.death,
            "vms": sorted(self.vms),
        }


class LightWorkers:
    """The worker processes of a light simulator and the placement of its VMs on them."""

    def __init__(self, count: int, ssh_port: int, log_level: str, on_death: OnDeath) -> None:
        if count < 2:
            raise ValueError(f"light_workers: {count} workers; 1 means the VMs run in the API process")
        self.count = count
        self.ssh_port = ssh_port
        self.log_level = log_level
        self.on_death = on_death
        self.workers: list[Worker] = []
        self.placed: dict[str, Worker] = {}
        self.stopping = False
        self._log = get_logger("simulator.light_pool")

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    async def start(self) -> None:
        for index in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "simulator.light_worker",
                "--ssh-port",
                str(self.ssh_port),
                "--log-level",
                self.log_level,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=LINE_LIMIT,
            )
            worker = Worker(index, proc)
            worker.reader = asyncio.create_task(self._read(worker), name=f"light-worker-{index}")
            self.workers.append(worker)
        self._log.info("light_pool.started", workers=self.count, pids=self.pids)

    async def _read(self, worker: Worker) -> None:
        """The worker's answers; at their end, its death (unless we stopped it) told once."""
        assert worker.proc.stdout is not None
        try:
            while line := await worker.proc.stdout.readline():
                reply = json.loads(line)
                answer = worker.pending.pop(reply["id"], None)
                if answer is None or answer.done():
                    continue
                if "error" in reply:
                    answer.set_exception(RuntimeError(f"light worker {worker.index}: {reply['error']}"))
                else:
                    answer.set_result(reply.get("ok"))
        except (ValueError, KeyError, ConnectionError) as exc:
            self._log.error("light_pool.bad_answer", worker=worker.index, error=str(exc))
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
        code = await worker.proc.wait()
        held = sorted(worker.vms)
        worker.death = (
            f"light worker {worker.index} (pid {worker.pid}) exited with status {code}; "
            f"the {len(held)} VMs it ran are down: {', '.join(held) or 'none'}"
        )
        for answer in worker.pending.values():
            if not answer.done():
                answer.set_exception(WorkerDied(worker.death))
        worker.pending.clear()
        worker.ended.set()
        if not self.stopping:
            self._log.error(
                "light_pool.worker_died", worker=worker.index, pid=worker.pid, exit_status=code, vms=held
            )
            for iid in held:
                self.placed.pop(iid, None)
            worker.vms.clear()
            self.on_death(worker.death, held)

    def _place(self, iid: str) -> Worker:
        current = self.placed.get(iid)
        if current is not None and not current.death:
            return current
        live = [w for w in self.workers if not w.death]
        if not live:
            deaths = "; ".join(w.death for w in self.workers)
            raise WorkerDied(f"no light worker is alive ({deaths})")
        worker = min(live, key=lambda w: (len(w.vms), w.index))
        worker.vms.add(iid)
        self.placed[iid] = worker
        return worker

    def worker_of(self, iid: str) -> int | None:
        worker = self.placed.get(iid)
        return None if worker is None else worker.index

    async def boot(self, vm: VM, keys: list[str]) -> None:
        """Boot ``vm`` on its worker (placed now if it has none); the VM's books as ``VM.boot`` keeps them."""
        worker = self._place(vm.instance_id)
        userdata = None if vm.userdata is None else base64.b64encode(vm.userdata).decode()
        public = await worker.call(
            "boot",
            iid=vm.instance_id,
            ip=vm.ip,
            home=str(vm.home),
            image_dir=str(vm.image_dir),
            boots=vm.boots,
            userdata=userdata,
            userdata_kind=vm.userdata_kind,
            userdata_dir=vm.userdata_dir,
            userdata_file=vm.userdata_file,
            keys=keys,
            delay=vm.command_delay,
        )
        vm.host_key = asyncssh.import_public_key(public)
        vm.boots += 1
        vm.crashed = False
        vm.set_status("running")

    async def _on(self, iid: str, op: str, **args: Any) -> Any:
        """An operation on the VM's worker; nothing to do when it has none or that one is gone."""
        worker = self.placed.get(iid)
        if worker is None or worker.death:
            return None
        return await worker.call(op, iid=iid, **args)

    async def halt(self, iid: str) -> None:
        await self._on(iid, "halt")

    async def forget(self, iid: str) -> None:
        await self._on(iid, "forget")
        worker = self.placed.pop(iid, None)
        if worker is not None:
            worker.vms.discard(iid)

    async def set_keys(self, iid: str, keys: list[str]) -> None:
        await self._on(iid, "keys", keys=keys)

    async def set_delay(self, iid: str, seconds: float) -> None:
        await self._on(iid, "delay", seconds=seconds)

    async def cut(self, iid: str) -> None:
        await self._on(iid, "cut")

    async def heal(self, iid: str) -> None:
        await self._on(iid, "heal")

    async def rounds(self, iid: str, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until the VM's agent (in its worker) has applied ``count`` rounds."""
        worker = self.placed.get(iid)
        if worker is None:
            raise KeyError(f"{iid}: on no light worker")
        await worker.call("rounds", iid=iid, count=count, timeout=timeout)

    def status(self) -> list[dict[str, Any]]:
        return [w.status() for w in self.workers]

    async def stop(self) -> None:
        """End every worker: stdin closed (it stops its VMs and exits), killed if it does not."""
        self.stopping = True
        for worker in self.workers:
            if worker.proc.stdin is not None and not worker.death:
                worker.proc.stdin.close()
        for worker in self.workers:
            try:
                await asyncio.wait_for(worker.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.wait()
            if worker.reader is not None:
                await worker.reader
