"""Finding and killing a simulated VM's processes, setsid'd daemons included.

A VM's processes are not one process group or session (userdata may call setsid, nohup, or fork
twice), so they are found the way the contract says: by ``PITRIX_VM_ID=<id>`` in
``/proc/<pid>/environ``, restricted to processes of the simulator's own user. Waiting for them to die
uses pidfds, which become readable when a process exits, so nothing polls.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from pitrix.logs import get_logger

MARKER = "PITRIX_VM_ID"
PROC = Path("/proc")


def vm_pids(instance_ids: set[str] | None = None) -> dict[int, str]:
    """Live processes carrying a VM marker: pid → instance id (only ``instance_ids`` if given)."""
    me, uid = os.getpid(), os.getuid()
    prefix = f"{MARKER}=".encode()
    found: dict[int, str] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                iid = item[len(prefix) :].decode(errors="replace")
                if instance_ids is None or iid in instance_ids:
                    found[int(entry.name)] = iid
                break
    return found


def _signal(pids: list[int], sig: signal.Signals) -> list[int]:
    sent = []
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        except PermissionError:
            continue
        sent.append(pid)
    return sent


async def _wait_exit(pids: list[int], timeout: float) -> list[int]:
    """Wait until these processes exit (zombies count as exited); returns those still alive."""
    loop = asyncio.get_running_loop()
    waiters: list[asyncio.Future[None]] = []
    fds: list[int] = []
    alive: dict[int, int] = {}
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        fds.append(fd)
        alive[fd] = pid
        future: asyncio.Future[None] = loop.create_future()

        def exited(fd: int = fd, future: asyncio.Future[None] = future) -> None:
            loop.remove_reader(fd)
            alive.pop(fd, None)
            if not future.done():
                future.set_result(None)

        loop.add_reader(fd, exited)
        waiters.append(future)
    try:
        if waiters:
            await asyncio.wait(waiters, timeout=timeout)
        return sorted(alive.values())
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)


async def kill_vm_processes(instance_ids: set[str], *, grace: float = 3.0) -> int:
    """SIGTERM every process of these VMs, SIGKILL what survives ``grace``; repeat until none is left.

    Repeating matters: a process may fork between the scan and the signal. Returns how many
    processes were signalled.
    """
    log = get_logger("simulator.processes")
    total = 0
    for round_no in range(20):
        found = await asyncio.to_thread(vm_pids, instance_ids)
        if not found:
            return total
        pids = sorted(found)
        total += len(pids)
        sig = signal.SIGTERM if round_no == 0 else signal.SIGKILL
        sent = _signal(pids, sig)
        survivors = await _wait_exit(sent, grace if sig == signal.SIGTERM else 5.0)
        if survivors:
            log.info("vm.processes_survived", pids=survivors, signal=sig.name)
            _signal(survivors, signal.SIGKILL)
            await _wait_exit(survivors, 5.0)
    remaining = await asyncio.to_thread(vm_pids, instance_ids)
    if remaining:
        log.error("vm.processes_unkillable", pids=sorted(remaining))
    return total
