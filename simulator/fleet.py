"""The simulated cloud's VMs and the operations on them, behind the API layer.

Operations answer at once and leave the work to a background task, with a job to follow it, as
QingCloud does. Every VM has a lock so a terminate arriving during a boot waits for the boot rather
than racing it on the VM's directory. Each running VM also has an SSH server here (see
:mod:`simulator.ssh`), started after its disk is ready and stopped before its processes are killed.

Faults on one VM are methods here: ``crash`` (processes killed, SSH silent, status stays
``running`` as a guest crash looks to a cloud: only a restart, or stop and start, revives it),
``slow`` (SSH commands wait before running), ``cut``/``heal`` (the VM's agent frozen: SIGSTOP of its
``pitrix-agent`` processes in full mode, its in-process agent stopped in light mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitrix.logs import get_logger
from simulator.errors import BAD_STATUS, INVALID_REQUEST, NOT_FOUND, QUOTA_EXCEEDED, ApiError
from simulator.faults import Faults
from simulator.images import ImageCatalog, ImageNotFound
from simulator.jobs import Job, JobBook, resource_id
from simulator.keypairs import KeyPairBook
from simulator.light_agent import LightAgent, start_once
from simulator.light_pool import LightWorkers
from simulator.network import AddressPool, NetworkError
from simulator.processes import AGENT_MARKERS, kill_vm_processes, signal_vm_processes
from simulator.quotas import Quotas
from simulator.snapshots import SnapshotBook, copy_atomically
from simulator.ssh import VmSshServer, console_text
from simulator.tags import TagBook
from simulator.userdata import DATA_DIR, EXEC_FILE
from simulator.vm import SSH_PORT, VM, now_iso
from simulator.volumes import (
    VolumeBook,
    link_device,
    make_volume_dir,
    remove_volume_dirs,
    unlink_device,
    write_device_size,
)
from simulator.vxnets import VxNetBook

GONE = ("terminated", "ceased")


class BootFailure(RuntimeError):
    """An injected boot failure (the boot-failure-rate fault)."""


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
    userdata_kind: str = "exec"  # simulator/userdata.py: plain, exec or tar (then an archive)
    userdata_dir: str = DATA_DIR
    userdata_file: str = EXEC_FILE


def _mac(ip: str) -> str:
    return "52:54:" + ":".join(f"{int(octet):02x}" for octet in ip.split("."))


def _remove_trees(paths: list[Path]) -> None:
    """Remove VM directories in one worker-thread hop (a thousand hops cost more than the work)."""
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


class Fleet:
    def __init__(
        self,
        state_dir: Path,
        pool: AddressPool,
        images: ImageCatalog,
        zone: str,
        *,
        faults: Faults | None = None,
        light: bool = False,
        ssh_port: int = SSH_PORT,
        light_workers: int = 1,
        log_level: str = "info",
    ) -> None:
        self.vms_dir = state_dir / "vms"
        self.pool = pool
        self.images = images
        self.zone = zone
        self.faults = faults if faults is not None else Faults()
        self.light = light
        self.ssh_port = ssh_port
        self.jobs = JobBook()
        self.keypairs = KeyPairBook()
        self.tags = TagBook()
        self.volumes = VolumeBook(state_dir / "volumes")
        self.snapshots = SnapshotBook(state_dir / "snapshots")
        self.vxnets = VxNetBook()  # the networks RunInstances accepts (vxnet-0 and those made)
        self.quotas = Quotas()  # the account's instance quota (RunInstances' 2600)
        self._vms: dict[str, VM] = {}
        self._ssh: dict[str, VmSshServer] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = get_logger("simulator.fleet", zone=zone)
        # --light-workers N (N > 1): the light VMs run in N worker processes, not in this one.
        self.light_workers: LightWorkers | None = None
        if light and light_workers > 1:
            self.light_workers = LightWorkers(light_workers, ssh_port, log_level, self._workers_died)

    # -- housekeeping ------------------------------------------------------------------------------

    async def reap_leftovers(self) -> list[str]:
        """Kill the processes of VMs a crashed simulator left in this state dir, and remove them
        (and the volumes it left: the volume book, like the VMs, lives in memory)."""
        if self.volumes.dir.is_dir():
            stale = [p for p in self.volumes.dir.iterdir() if p.is_dir()]
            if stale:
                await asyncio.to_thread(remove_volume_dirs, stale)
                self._log.warning("fleet.reaped_volumes", volume_ids=[p.name for p in stale])
        if self.snapshots.dir.is_dir():
            await asyncio.to_thread(remove_volume_dirs, [self.snapshots.dir])
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
        alive = [vm.instance_id for vm in self._vms.values() if vm.status not in GONE]
        if alive:
            try:
                await self._terminate_many(alive)
            except Exception:
                self._log.exception("fleet.shutdown_failed", instance_ids=alive)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30.0)
        for task in set(self._tasks):
            task.cancel()
        if self.light_workers is not None:
            await self.light_workers.stop()
        # A stopped simulator is a cloud that is gone: its volumes' data goes with it.
        left = [v for v in self.volumes.all() if v.status != "deleted"]
        await asyncio.to_thread(remove_volume_dirs, [v.home for v in left])
        for volume in left:
            volume.instance_id, volume.device, volume.delete_time = "", "", now_iso()
            volume.set_status("deleted")
        await asyncio.to_thread(remove_volume_dirs, [self.snapshots.dir])

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
        keypairs = self.keypairs.existing(list(request.keypair_ids))
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
                userdata_kind=request.userdata_kind,
                userdata_dir=request.userdata_dir,
                userdata_file=request.userdata_file,
                light=self.light and not self.images.needs_processes(image_dir),
                sandbox=self.images.sandboxed(image_dir),
                shared_dirs=(str(self.volumes.dir),),
            )
            self._vms[iid] = vm
            self._locks[iid] = asyncio.Lock()
            created.append(iid)
        self.keypairs.attach(keypairs, created)
        job = self.jobs.new("RunInstances", created)
        self._log.info("fleet.run", instance_ids=created, image=request.image_id, name=request.name)

        async def boot_all() -> None:
            await self._boot_all(created, "boot")

        self._spawn(job, boot_all)
        return created, job

    async def _boot_all(self, iids: list[str], verb: str) -> None:
        """Boot these VMs at once; one error for the job if any failed (the others still run)."""
        results = await asyncio.gather(*(self._boot(iid) for iid in iids), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(iids)} instances failed to {verb}: {failures[0]}")

    def _claim(self, instance_ids: list[str], status: str, transition: str) -> list[VM]:
        """The VMs, all in ``status`` and in no transition, now marked ``transition``."""
        vms = self._existing(instance_ids)
        for vm in vms:
            if vm.status != status or vm.transition_status:
                raise ApiError(
                    BAD_STATUS,
                    f"ResourceStatusError, instance [{vm.instance_id}] is [{vm.status}], not {status}",
                )
        for vm in vms:
            vm.transition_status = transition
        return vms

    async def _halt_many(self, vms: list[VM]) -> int:
        """Kill these VMs' processes in one sweep (their locks held); how many were signalled."""
        for vm in vms:
            await self._quiesce(vm)
        killed = await kill_vm_processes({vm.instance_id for vm in vms})
        for vm in vms:
            await vm.collect_userdata()
        return killed

    async def _boot(self, iid: str) -> None:
        vm = self._vms[iid]
        async with self._locks[iid]:
            if vm.status in GONE or vm.transition_status == "terminating":
                return
            try:
                delay = self.faults.boot_delay()
                if delay > 0:
                    await asyncio.sleep(delay)  # the boot-delay fault: a slow hypervisor
                if self.faults.boot_fails():
                    raise BootFailure(f"instance [{iid}] failed to boot (injected boot failure)")
                if self._on_worker(vm):
                    assert self.light_workers is not None
                    await self.light_workers.boot(vm, self._public_keys(iid))
                else:
                    await vm.boot()
                    await self._start_ssh(vm)
            except Exception:
                await self._power_off(vm)
                vm.set_status("stopped")  # QingCloud leaves a failed boot halted, not running
                raise

    async def _start_ssh(self, vm: VM) -> None:
        assert vm.host_key is not None
        server = VmSshServer(
            instance_id=vm.instance_id,
            ip=vm.ip,
            port=self.ssh_port,
            root=vm.root,
            environ=vm.environ(),
            host_key=vm.host_key,
            accepted_keys=lambda: self.keypairs.keys_of(vm.instance_id),
            command_delay=lambda: vm.command_delay,
            light=vm.light,
            start_agent=lambda config: self._start_light_agent(vm, config),
            enter=vm.enter_command if vm.sandbox else None,
        )
        await server.start()
        self._ssh[vm.instance_id] = server

    async def _start_light_agent(self, vm: VM, config: str) -> str:
        """A light VM's ``pitrix-agent -config-file`` over SSH: its in-process agent, if not running."""
        before = vm.agent
        vm.agent, error = await start_once(vm.agent, vm.cut_off, vm.root, vm.environ(), config)
        if vm.agent is not before:
            self._log.info("fleet.light_agent_started", instance_id=vm.instance_id, config=config)
        return error

    async def _stop_ssh(self, vm: VM) -> None:
        server = self._ssh.pop(vm.instance_id, None)
        if server is not None:
            await server.stop()

    async def _quiesce(self, vm: VM) -> None:
        """Before killing a VM's processes: SSH down, light agent ended, a frozen agent thawed
        (a stopped process would sit on SIGTERM until the grace period ran out)."""
        await self._stop_ssh(vm)
        await vm.stop_agent()
        if self._on_worker(vm):
            assert self.light_workers is not None
            await self.light_workers.halt(vm.instance_id)
        if vm.cut_off and not vm.light:
            await asyncio.to_thread(signal_vm_processes, {vm.instance_id}, signal.SIGCONT, AGENT_MARKERS)
        vm.cut_off = False

    async def _power_off(self, vm: VM) -> int:
        """SSH down, agent and processes dead; the disk stays."""
        await self._quiesce(vm)
        return await vm.halt()

    def terminate(self, instance_ids: list[str]) -> Job:
        vms = self._existing(instance_ids)
        for vm in vms:
            if vm.status in GONE or vm.transition_status == "terminating":
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
            vms = [self._vms[i] for i in iids if self._vms[i].status not in GONE]
            for vm in vms:
                vm.transition_status = "terminating"
                await self._quiesce(vm)
            await kill_vm_processes({vm.instance_id for vm in vms})
            await asyncio.to_thread(_remove_trees, [vm.home for vm in vms])
            for vm in vms:
                for volume in self.volumes.attached_to(vm.instance_id):
                    volume.instance_id, volume.device = "", ""  # as QingCloud: detached, data kept
                    volume.set_status("available")
                self.keypairs.forget_instance(vm.instance_id)
                self.tags.forget_resource(vm.instance_id)
                await vm.collect_userdata()
                self.pool.release(vm.ip)
                vm.terminate_time = now_iso()
                vm.set_status("terminated")
                if self._on_worker(vm):
                    assert self.light_workers is not None
                    await self.light_workers.forget(vm.instance_id)
                self._log.info("fleet.terminated", instance_id=vm.instance_id, ip=vm.ip)

    def stop(self, instance_ids: list[str]) -> Job:
        vms = self._claim(instance_ids, "running", "stopping")
        job = self.jobs.new("StopInstances", instance_ids)

        async def stop_all() -> None:
            await self._stop_many([vm.instance_id for vm in vms])

        self._spawn(job, stop_all)
        return job

    async def _stop_many(self, iids: list[str]) -> None:
        async with self._locked(iids):
            vms = [self._vms[i] for i in iids if self._vms[i].status == "running"]
            killed = await self._halt_many(vms)
            for vm in vms:
                vm.set_status("stopped")
            self._log.info("fleet.stopped", instance_ids=[vm.instance_id for vm in vms], processes=killed)

    def start(self, instance_ids: list[str]) -> Job:
        vms = self._claim(instance_ids, "stopped", "starting")
        job = self.jobs.new("StartInstances", instance_ids)

        async def start_all() -> None:
            await self._boot_all([vm.instance_id for vm in vms], "start")

        self._spawn(job, start_all)
        return job

    def restart(self, instance_ids: list[str]) -> Job:
        """Power-cycle running instances: processes killed, userdata run again, status ``running``."""
        vms = self._claim(instance_ids, "running", "restarting")
        job = self.jobs.new("RestartInstances", instance_ids)

        async def restart_all() -> None:
            iids = [vm.instance_id for vm in vms]
            async with self._locked(iids):
                await self._halt_many(vms)
            await self._boot_all(iids, "restart")

        self._spawn(job, restart_all)
        return job

    # -- key pairs -----------------------------------------------------------------------------------

    def _keypair_job(self, action: str, keypair_ids: list[str], instance_ids: list[str]) -> Job:
        pairs = self.keypairs.existing(keypair_ids)
        vms = self._existing(instance_ids)
        for vm in vms:
            if vm.status in GONE or vm.transition_status == "terminating":
                raise ApiError(
                    BAD_STATUS, f"ResourceStatusError, instance [{vm.instance_id}] is [{vm.status}]"
                )
        job = self.jobs.new(action, [*keypair_ids, *instance_ids])
        if action == "AttachKeyPairs":
            self.keypairs.attach(pairs, instance_ids)
        else:
            self.keypairs.detach(pairs, instance_ids)

        async def nothing_left() -> None:
            # The change above is what the next SSH login sees (a light worker is told it).
            await self._push_keys(instance_ids)

        self._spawn(job, nothing_left)
        return job

    def attach_keypairs(self, keypair_ids: list[str], instance_ids: list[str]) -> Job:
        return self._keypair_job("AttachKeyPairs", keypair_ids, instance_ids)

    def detach_keypairs(self, keypair_ids: list[str], instance_ids: list[str]) -> Job:
        return self._keypair_job("DetachKeyPairs", keypair_ids, instance_ids)

    # -- volumes -------------------------------------------------------------------------------------

    def create_volumes(self, name: str, size: int, count: int) -> tuple[list[str], Job]:
        volumes = [self.volumes.new(name, size) for _ in range(count)]
        ids = [v.volume_id for v in volumes]
        job = self.jobs.new("CreateVolumes", ids)

        async def create_all() -> None:
            for volume in volumes:
                await asyncio.to_thread(make_volume_dir, volume)
                volume.set_status("available")
            self._log.info("fleet.volumes_created", volume_ids=ids, size=size, name=name)

        self._spawn(job, create_all)
        return ids, job

    def _attachable_vm(self, instance_id: str) -> VM:
        vm = self._existing([instance_id])[0]
        if vm.status not in ("running", "stopped") or vm.transition_status:
            raise ApiError(
                BAD_STATUS,
                f"ResourceStatusError, instance [{instance_id}] is [{vm.status}"
                + (f"/{vm.transition_status}" if vm.transition_status else "")
                + "], volumes attach to running or stopped instances",
            )
        return vm

    def attach_volumes(self, volume_ids: list[str], instance_id: str) -> Job:
        vm = self._attachable_vm(instance_id)
        devices = self.volumes.free_devices(instance_id, len(volume_ids))
        volumes = self.volumes.claim(volume_ids, "available", "attaching")
        for volume, device in zip(volumes, devices, strict=True):  # taken now: two attaches never share one
            volume.instance_id, volume.device = instance_id, device
        job = self.jobs.new("AttachVolumes", [*volume_ids, instance_id])

        async def attach_all() -> None:
            async with self._locks[instance_id]:
                if vm.status in GONE or vm.transition_status == "terminating":
                    for volume in volumes:
                        volume.instance_id, volume.device = "", ""
                        volume.set_status("available")
                    raise RuntimeError(f"instance [{instance_id}] was terminated while attaching")
                for volume in volumes:
                    await asyncio.to_thread(link_device, vm.root, volume.device, volume.data)
                    await asyncio.to_thread(write_device_size, vm.root, volume.device, volume.size)
                    volume.set_status("in-use")
            self._log.info("fleet.volumes_attached", volume_ids=volume_ids, instance_id=instance_id)

        self._spawn(job, attach_all)
        return job

    def detach_volumes(self, volume_ids: list[str], instance_id: str) -> Job:
        volumes = self.volumes.existing(volume_ids)
        for volume in volumes:
            if volume.instance_id != instance_id or volume.status != "in-use":
                raise ApiError(
                    BAD_STATUS,
                    f"ResourceStatusError, volume [{volume.volume_id}] is not attached to [{instance_id}]",
                )
        volumes = self.volumes.claim(volume_ids, "in-use", "detaching")
        vm = self._vms[instance_id]
        job = self.jobs.new("DetachVolumes", [*volume_ids, instance_id])

        async def detach_all() -> None:
            async with self._locks[instance_id]:
                for volume in volumes:
                    await asyncio.to_thread(unlink_device, vm.root, volume.device)
                    volume.instance_id, volume.device = "", ""
                    volume.set_status("available")
            self._log.info("fleet.volumes_detached", volume_ids=volume_ids, instance_id=instance_id)

        self._spawn(job, detach_all)
        return job

    def delete_volumes(self, volume_ids: list[str]) -> Job:
        volumes = self.volumes.claim(volume_ids, "available", "deleting")
        job = self.jobs.new("DeleteVolumes", volume_ids)

        async def delete_all() -> None:
            await asyncio.to_thread(remove_volume_dirs, [v.home for v in volumes])
            for volume in volumes:
                volume.delete_time = now_iso()
                volume.set_status("deleted")
            self._log.info("fleet.volumes_deleted", volume_ids=volume_ids)

        self._spawn(job, delete_all)
        return job

    def volume_ledger(self) -> list[dict[str, Any]]:
        return self.volumes.ledger()

    # -- snapshots (backups) ------------------------------------------------------------------------

    def create_snapshots(self, volume_ids: list[str], name: str) -> tuple[list[str], Job]:
        """One snapshot per volume: a copy of its data directory, renamed into place when whole."""
        volumes = self.volumes.existing(volume_ids)
        for volume in volumes:
            if volume.status not in ("available", "in-use") or volume.transition_status == "deleting":
                raise ApiError(
                    BAD_STATUS, f"ResourceStatusError, volume [{volume.volume_id}] is [{volume.status}]"
                )
        snapshots = [self.snapshots.new(name, v.volume_id, v.size) for v in volumes]
        ids = [s.snapshot_id for s in snapshots]
        job = self.jobs.new("CreateSnapshots", ids)

        async def take_all() -> None:
            for volume, snapshot in zip(volumes, snapshots, strict=True):
                await asyncio.to_thread(copy_atomically, volume.data, snapshot.data)
                snapshot.set_status("available")
            self._log.info("fleet.snapshots_created", snapshot_ids=ids, volume_ids=volume_ids, name=name)

        self._spawn(job, take_all)
        return ids, job

    def delete_snapshots(self, snapshot_ids: list[str]) -> Job:
        snapshots = self.snapshots.existing(snapshot_ids)
        for snapshot in snapshots:
            if snapshot.transition_status:
                raise ApiError(
                    BAD_STATUS,
                    f"ResourceStatusError, snapshot [{snapshot.snapshot_id}] "
                    f"is [{snapshot.transition_status}]",
                )
            snapshot.transition_status = "deleting"
        job = self.jobs.new("DeleteSnapshots", snapshot_ids)

        async def delete_all() -> None:
            await asyncio.to_thread(remove_volume_dirs, [s.home for s in snapshots])
            for snapshot in snapshots:
                snapshot.delete_time = now_iso()
                snapshot.set_status("deleted")
            self._log.info("fleet.snapshots_deleted", snapshot_ids=snapshot_ids)

        self._spawn(job, delete_all)
        return job

    def create_volume_from_snapshot(self, snapshot_id: str, name: str) -> tuple[str, Job]:
        """A new volume of the snapshot's size starting as a copy of its data."""
        snapshot = self.snapshots.usable(snapshot_id)
        volume = self.volumes.new(name, snapshot.size)
        job = self.jobs.new("CreateVolumeFromSnapshot", [volume.volume_id, snapshot_id])

        async def copy() -> None:
            await asyncio.to_thread(copy_atomically, snapshot.data, volume.data)
            volume.set_status("available")
            self._log.info("fleet.volume_from_snapshot", volume_id=volume.volume_id, snapshot_id=snapshot_id)

        self._spawn(job, copy)
        return volume.volume_id, job

    def snapshot_ledger(self) -> list[dict[str, Any]]:
        return self.snapshots.ledger()

    # -- resize --------------------------------------------------------------------------------------

    def resize_instances(self, instance_ids: list[str], cpu: int | None, memory: int | None) -> Job:
        """New CPU count and memory for stopped instances; the guest sees them from its next boot
        (``VM.boot`` writes them where it looks)."""
        vms = self._claim(instance_ids, "stopped", "resizing")
        job = self.jobs.new("ResizeInstances", instance_ids)

        async def resize_all() -> None:
            for vm in vms:
                vm.cpu = cpu or vm.cpu
                vm.memory = memory or vm.memory
                vm.set_status("stopped")
            self._log.info("fleet.resized", instance_ids=instance_ids, cpu=cpu, memory=memory)

        self._spawn(job, resize_all)
        return job

    def resize_running(self, instance_ids: list[str], cpu: int, memory: int) -> Job:
        """Resize running instances the way Nova does it: powered off, resized, booted again."""
        vms = self._claim(instance_ids, "running", "resizing")
        job = self.jobs.new("ResizeInstances", instance_ids)

        async def resize_all() -> None:
            iids = [vm.instance_id for vm in vms]
            async with self._locked(iids):
                await self._halt_many(vms)
                for vm in vms:
                    vm.cpu, vm.memory = cpu, memory
            await self._boot_all(iids, "resize")

        self._spawn(job, resize_all)
        return job

    def resize_volumes(self, volume_ids: list[str], size: int, *, online: bool = False) -> Job:
        """Grow volumes that are detached, or attached to a stopped instance (any instance when
        ``online``: Cinder's in-use extend); the new size shows in the guest's
        ``/sys/block/<dev>/size`` (512-byte sectors) while attached."""
        volumes = self.volumes.existing(volume_ids)
        for volume in volumes:
            if size <= volume.size:
                raise ApiError(
                    INVALID_REQUEST,
                    f"InvalidParameterError, parameter [size] [{size}] should be larger than the size "
                    f"[{volume.size}] of volume [{volume.volume_id}]",
                )
            vm = self._vms.get(volume.instance_id) if volume.instance_id else None
            if vm is not None and not online and (vm.status != "stopped" or vm.transition_status):
                raise ApiError(
                    BAD_STATUS,
                    f"ResourceStatusError, volume [{volume.volume_id}] is attached to instance "
                    f"[{vm.instance_id}] which is [{vm.status}], not stopped",
                )
        for volume in volumes:  # each in its own status (available or in-use), none in a transition
            self.volumes.claim([volume.volume_id], volume.status, "resizing")
        job = self.jobs.new("ResizeVolumes", volume_ids)

        async def resize_all() -> None:
            for volume in volumes:
                volume.size = size
                if volume.instance_id and volume.instance_id in self._vms:
                    await asyncio.to_thread(
                        write_device_size, self._vms[volume.instance_id].root, volume.device, size
                    )
                volume.set_status(volume.status)
            self._log.info("fleet.volumes_resized", volume_ids=volume_ids, size=size)

        self._spawn(job, resize_all)
        return job

    # -- faults on one VM ----------------------------------------------------------------------------

    def _running(self, instance_id: str) -> VM:
        vm = self._existing([instance_id])[0]
        if vm.status != "running" or vm.transition_status:
            raise ApiError(BAD_STATUS, f"ResourceStatusError, instance [{instance_id}] is [{vm.status}]")
        return vm

    async def crash(self, instance_id: str) -> int:
        """The guest dies: every process killed, SSH silent; the cloud still says ``running``."""
        vm = self._running(instance_id)
        async with self._locks[instance_id]:
            killed = await self._power_off(vm)
            vm.crashed = True
        self._log.warning("fleet.crashed", instance_id=instance_id, processes=killed)
        return killed

    def slow(self, instance_id: str, seconds: float) -> None:
        """Each later SSH command of this VM waits ``seconds`` first (0 ends the fault)."""
        if not 0 <= seconds <= 3600:
            raise ValueError(f"seconds: must be between 0 and 3600, got {seconds}")
        vm = self._existing([instance_id])[0]
        vm.command_delay = float(seconds)
        if self._on_worker(vm):
            assert self.light_workers is not None
            self._background(self.light_workers.set_delay(instance_id, vm.command_delay))

    async def cut(self, instance_id: str) -> int:
        """Freeze the VM's agent: it neither heartbeats nor watches nor reports until ``heal``."""
        vm = self._running(instance_id)
        if vm.crashed:
            raise ApiError(BAD_STATUS, f"ResourceStatusError, instance [{instance_id}] has crashed")
        vm.cut_off = True
        if self._on_worker(vm):
            assert self.light_workers is not None
            await self.light_workers.cut(instance_id)
            return 1
        if vm.light:
            await vm.stop_agent()
            return 1
        return await asyncio.to_thread(signal_vm_processes, {instance_id}, signal.SIGSTOP, AGENT_MARKERS)

    async def heal(self, instance_id: str) -> int:
        vm = self._existing([instance_id])[0]
        if not vm.cut_off:
            return 0
        vm.cut_off = False
        if self._on_worker(vm):
            assert self.light_workers is not None
            if vm.status == "running" and not vm.crashed:
                await self.light_workers.heal(instance_id)
            return 1
        if vm.light:
            if vm.status == "running" and vm.agent is None:
                vm.agent = await LightAgent.start_if_configured(vm.root, vm.environ())
            return 1
        return await asyncio.to_thread(signal_vm_processes, {instance_id}, signal.SIGCONT, AGENT_MARKERS)

    def console(self, instance_id: str) -> dict[str, Any]:
        vm = self._existing([instance_id])[0]
        if vm.host_key is None:
            return {"instance_id": instance_id, "output": "", "ssh_host_key": "", "ssh_port": self.ssh_port}
        return {
            "instance_id": instance_id,
            "output": "" if vm.crashed else console_text(instance_id, vm.host_key),
            "ssh_host_key": self._host_key_line(vm),
            "ssh_port": self.ssh_port,
        }

    # -- light workers (--light-workers N) --------------------------------------------------------

    async def start_light_workers(self) -> list[int]:
        """Start the light workers, if this fleet has them; their pids."""
        if self.light_workers is None:
            return []
        await self.light_workers.start()
        return self.light_workers.pids

    def _on_worker(self, vm: VM) -> bool:
        """Whether the VM's SSH and agent run in a light worker rather than in this process."""
        return self.light_workers is not None and vm.light

    def _public_keys(self, instance_id: str) -> list[str]:
        return [k.export_public_key("openssh").decode() for k in self.keypairs.keys_of(instance_id)]

    async def _push_keys(self, instance_ids: list[str]) -> None:
        for vm in self._existing(instance_ids):
            if self._on_worker(vm) and vm.status not in GONE:
                assert self.light_workers is not None
                await self.light_workers.set_keys(vm.instance_id, self._public_keys(vm.instance_id))

    def _background(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                self._log.exception("fleet.background_failed")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _workers_died(self, message: str, instance_ids: list[str]) -> None:
        """A light worker died: its running VMs are down as after a guest crash (SSH silent, the
        cloud still says ``running``; a restart boots them on a live worker)."""
        for iid in instance_ids:
            vm = self._vms.get(iid)
            if vm is not None and vm.status == "running":
                vm.crashed = True
        self._log.error("fleet.light_worker_died", error=message)

    def light_worker_status(self) -> list[dict[str, Any]]:
        """Each light worker: index, pid, alive, exit status, error and the VMs it runs."""
        return [] if self.light_workers is None else self.light_workers.status()

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

    @staticmethod
    def _host_key_line(vm: VM) -> str:
        if vm.host_key is None:
            return ""
        kind, blob = vm.host_key.convert_to_public().export_public_key("openssh").decode().split()[:2]
        return f"{kind} {blob}"

    def describe_one(self, vm: VM, verbose: int) -> dict[str, Any]:
        alive = vm.status not in GONE
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
            "keypair_ids": self.keypairs.ids_of(vm.instance_id),
            "eip": {},
            "tags": self.tags.of(vm.instance_id),
            # Not in QingCloud's API: the simulator's SSH listens on a high port of the VM's address,
            # and its host key is given here (and on the console) so that clients can pin it.
            "ssh_port": self.ssh_port,
            "ssh_host_key": self._host_key_line(vm),
        }
        if verbose:
            item["image"].update(os_family="pitrix-sim", processor_type="64bit", provider="system")
            item["security_group"] = {}
            attached = self.volumes.attached_to(vm.instance_id)
            item["volume_ids"] = [v.volume_id for v in attached]
            item["volumes"] = [
                {"volume_id": v.volume_id, "volume_name": v.name, "device": v.device, "size": v.size}
                for v in attached
            ]
            item["login_mode"] = vm.login_mode
        return item
