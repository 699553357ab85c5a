"""The simulated cloud's VMs and the operations on them, behind the API layer.

Operations answer at once and leave the work to a background task, with a job to follow it, as
QingCloud does. Every VM has a lock so a terminate arriving during a boot waits for the boot rather
than racing it on the VM's directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitrix.logs import get_logger
from simulator.errors import BAD_STATUS, NOT_FOUND, QUOTA_EXCEEDED, ApiError
from simulator.images import ImageCatalog, ImageNotFound
from simulator.jobs import Job, JobBook, resource_id
from simulator.network import AddressPool, NetworkError
from simulator.processes import kill_vm_processes
from simulator.vm import SSH_PORT, VM, now_iso


@dataclass(frozen=True, slots=True)
class RunRequest:
    image_id: str
    count: int = 1
    name: str = ""
    cpu: int = 1
    memory: int = 1024
    vxnet_id: str = "vxnet-0"
    login_mode: str = "passwd"
    keypair_ids: tuple[str, ...] = ()
    userdata: bytes | None = None


def _mac(ip: str) -> str:
    return "52:54:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


class Fleet:
    def __init__(self, state_dir: Path, pool: AddressPool, images: ImageCatalog, zone: str) -> None:
        self.vms_dir = state_dir / "vms"
        self.pool = pool
        self.images = images
        self.zone = zone
        self.jobs = JobBook()
        self._vms: dict[str, VM] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = get_logger("simulator.fleet", zone=zone)

    # -- housekeeping ------------------------------------------------------------------------------

    async def reap_leftovers(self) -> list[str]:
        """Kill the processes of VMs a crashed simulator left in this state dir, and remove them."""
        if not self.vms_dir.is_dir():
            return []
        leftovers = [p.name for p in self.vms_dir.iterdir() if p.is_dir()]
        if leftovers:
            await kill_vm_processes(set(leftovers))
            for name in leftovers:
                await asyncio.to_thread(shutil.rmtree, self.vms_dir / name, True)
            self._log.warning("fleet.reaped_leftovers", instance_ids=leftovers)
        return leftovers

    async def shutdown(self) -> None:
        """Terminate every VM that is not terminated yet and wait for all background work."""
        alive = [vm.instance_id for vm in self._vms.values() if vm.status not in ("terminated", "ceased")]
        if alive:
            try:
                await self._terminate_many(alive)
            except Exception:
                self._log.exception("fleet.shutdown_failed", instance_ids=alive)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30.0)
        for task in set(self._tasks):
            task.cancel()

    def ledger(self) -> list[dict[str, Any]]:
        return [vm.ledger_entry() for vm in self._vms.values()]

    def vm(self, instance_id: str) -> VM | None:
        return self._vms.get(instance_id)

    # -- operations --------------------------------------------------------------------------------

    def _spawn(self, job: Job, work: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            job.advance("working")
            try:
                await work()
            except Exception as exc:  # a failed job is reported through DescribeJobs, not raised
                self._log.exception("fleet.job_failed", job_id=job.job_id, action=job.job_action)
                job.advance("failed", str(exc))
            else:
                job.advance("successful")

        task = asyncio.create_task(run(), name=f"{job.job_action}-{job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _existing(self, instance_ids: Iterable[str]) -> list[VM]:
        vms = []
        for iid in instance_ids:
            vm = self._vms.get(iid)
            if vm is None:
                raise ApiError(NOT_FOUND, f"ResourceNotFound, resource [{iid}] not found")
            vms.append(vm)
        return vms

    def run(self, request: RunRequest) -> tuple[list[str], Job]:
        try:
            image_dir = self.images.find(request.image_id)
        except ImageNotFound as exc:
            raise ApiError(NOT_FOUND, f"ResourceNotFound, {exc}") from None
        addresses: list[str] = []
        try:
            for _ in range(request.count):
                addresses.append(self.pool.allocate())
        except NetworkError as exc:
            for ip in addresses:
                self.pool.release(ip)
            raise ApiError(QUOTA_EXCEEDED, f"QuotaExceeded, {exc}") from None
        created = []
        for ip in addresses:
            iid = resource_id("i")
            while iid in self._vms:
                iid = resource_id("i")
            vm = VM(
                instance_id=iid,
                name=request.name,
                image_id=request.image_id,
                image_dir=image_dir,
                ip=ip,
                home=self.vms_dir / iid,
                cpu=request.cpu,
                memory=request.memory,
                vxnet_id=request.vxnet_id,
                login_mode=request.login_mode,
                keypair_ids=list(request.keypair_ids),
                userdata=request.userdata,
            )
            self._vms[iid] = vm
            self._locks[iid] = asyncio.Lock()
            created.append(iid)
        job = self.jobs.new("RunInstances", created)
        self._log.info("fleet.run", instance_ids=created, image=request.image_id, name=request.name)

        async def boot_all() -> None:
            results = await asyncio.gather(
                *(self._boot(iid, first=True) for iid in created), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise RuntimeError(
                    f"{len(failures)} of {len(created)} instances failed to boot: {failures[0]}"
                )

        self._spawn(job, boot_all)
        return created, job

    async def _boot(self, iid: str, *, first: bool) -> None:
        vm = self._vms[iid]
        async with self._locks[iid]:
            if vm.status in ("terminated", "ceased") or vm.transition_status == "terminating":
                return
            try:
                await vm.boot()
            except Exception:
                await vm.halt()
                vm.set_status("stopped")  # QingCloud leaves a failed boot halted, not running
                raise

    def terminate(self, instance_ids: list[str]) -> Job:
        vms = self._existing(instance_ids)
        for vm in vms:
            if vm.status in ("terminated", "ceased") or vm.transition_status == "terminating":
                raise ApiError(
                    BAD_STATUS, f"ResourceStatusError, instance [{vm.instance_id}] is already terminated"
                )
        for vm in vms:
            vm.transition_status = "terminating"
        job = self.jobs.new("TerminateInstances", instance_ids)

        async def terminate_all() -> None:
            await self._terminate_many([vm.instance_id for vm in vms])

        self._spawn(job, terminate_all)
        return job

    @contextlib.asynccontextmanager
    async def _locked(self, iids: list[str]) -> AsyncIterator[None]:
        """Hold the locks of several VMs (taken in one order, so two batches never deadlock)."""
        async with contextlib.AsyncExitStack() as stack:
            for iid in sorted(set(iids)):
                await stack.enter_async_context(self._locks[iid])
            yield

    async def _terminate_many(self, iids: list[str]) -> None:
        """Kill the VMs' processes in one sweep of /proc, then remove their disks and addresses."""
        async with self._locked(iids):
            vms = [self._vms[i] for i in iids if self._vms[i].status not in ("terminated", "ceased")]
            for vm in vms:
                vm.transition_status = "terminating"
            await kill_vm_processes({vm.instance_id for vm in vms})
            for vm in vms:
                await vm.collect_userdata()
                await vm.remove_disk()
                self.pool.release(vm.ip)
                vm.terminate_time = now_iso()
                vm.set_status("terminated")
                self._log.info("fleet.terminated", instance_id=vm.instance_id, ip=vm.ip)

    def stop(self, instance_ids: list[str]) -> Job:
        vms = self._existing(instance_ids)
        for vm in vms:
            if vm.status != "running" or vm.transition_status:
                raise ApiError(
                    BAD_STATUS,
                    f"ResourceStatusError, instance [{vm.instance_id}] is [{vm.status}], not running",
                )
        for vm in vms:
            vm.transition_status = "stopping"
        job = self.jobs.new("StopInstances", instance_ids)

        async def stop_all() -> None:
            await self._stop_many([vm.instance_id for vm in vms])

        self._spawn(job, stop_all)
        return job

    async def _stop_many(self, iids: list[str]) -> None:
        async with self._locked(iids):
            vms = [self._vms[i] for i in iids if self._vms[i].status == "running"]
            killed = await kill_vm_processes({vm.instance_id for vm in vms})
            for vm in vms:
                await vm.collect_userdata()
                vm.set_status("stopped")
            self._log.info("fleet.stopped", instance_ids=[vm.instance_id for vm in vms], processes=killed)

    def start(self, instance_ids: list[str]) -> Job:
        vms = self._existing(instance_ids)
        for vm in vms:
            if vm.status != "stopped" or vm.transition_status:
                raise ApiError(
                    BAD_STATUS,
                    f"ResourceStatusError, instance [{vm.instance_id}] is [{vm.status}], not stopped",
                )
        for vm in vms:
            vm.transition_status = "starting"
        job = self.jobs.new("StartInstances", instance_ids)

        async def start_all() -> None:
            results = await asyncio.gather(
                *(self._boot(vm.instance_id, first=False) for vm in vms), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                raise RuntimeError(f"{len(failures)} instances failed to start: {failures[0]}")

        self._spawn(job, start_all)
        return job

    # -- queries -----------------------------------------------------------------------------------

    def describe(
        self,
        *,
        instance_ids: list[str],
        statuses: list[str],
        search_word: str,
        offset: int,
        limit: int,
        verbose: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of instances, newest first, and how many match in all."""
        wanted = set(instance_ids)
        word = search_word.lower()
        matches = [
            vm
            for vm in reversed(self._vms.values())
            if (not wanted or vm.instance_id in wanted)
            and (not statuses or vm.status in statuses)
            and (not word or word in vm.instance_id.lower() or word in vm.name.lower())
        ]
        return [self.describe_one(vm, verbose) for vm in matches[offset : offset + limit]], len(matches)

    def describe_one(self, vm: VM, verbose: int) -> dict[str, Any]:
        alive = vm.status not in ("terminated", "ceased")
        item: dict[str, Any] = {
            "instance_id": vm.instance_id,
            "instance_name": vm.name,
            "description": "",
            "instance_type": f"c{vm.cpu}m{max(1, vm.memory // 1024)}",
            "vcpus_current": vm.cpu,
            "memory_current": vm.memory,
            "status": vm.status,
            "transition_status": vm.transition_status,
            "status_time": vm.status_time,
            "create_time": vm.create_time,
            "sub_code": 0,
            "zone_id": self.zone,
            "image": {"image_id": vm.image_id, "image_name": vm.image_id, "platform": "linux"},
            "vxnets": [
                {
                    "vxnet_id": vm.vxnet_id,
                    "vxnet_name": vm.vxnet_id,
                    "vxnet_type": 1,
                    "nic_id": _mac(vm.ip),
                    "private_ip": vm.ip if alive else "",
                }
            ],
            "keypair_ids": list(vm.keypair_ids),
            "eip": {},
            "tags": [],
            # Not in QingCloud's API: the simulator's SSH listens on a high port of the VM's address.
            "ssh_port": SSH_PORT,
        }
        if verbose:
            item["image"].update(os_family="pitrix-sim", processor_type="64bit", provider="system")
            item["security_group"] = {}
            item["volume_ids"] = []
            item["volumes"] = []
            item["login_mode"] = vm.login_mode
        return item
