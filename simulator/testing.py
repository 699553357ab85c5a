"""Helpers for tests that drive simulated VMs: signed calls, per-test networks, a beacon VMs report to.

A VM's daemon cannot be awaited directly, so test userdata makes it connect back to a beacon on
127.0.0.1 and say who it is; the test awaits that message with a deadline instead of polling.
"""

from __future__ import annotations

import asyncio
import random
import shlex
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from pitrix.providers.qingcloud.signer import signed_params

if TYPE_CHECKING:
    from simulator.cloud import Simulator


async def call(
    sim: Simulator,
    action: str,
    params: Mapping[str, object] | None = None,
    *,
    method: str = "POST",
    now: datetime | None = None,
    secret: str | None = None,
    drop: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One signed QingCloud call to ``sim`` (``secret``, ``now`` and ``drop`` forge bad requests)."""
    creds = sim.credentials
    body = signed_params(
        {"action": action, "zone": sim.zone, **(params or {})},
        access_key_id=creds["access_key_id"],
        secret_access_key=secret or creds["secret_access_key"],
        method=method,
        now=now,
    )
    for name in drop:
        body.pop(name, None)
    async with aiohttp.ClientSession() as session:
        if method == "GET":
            request = session.get(sim.url + "/iaas/", params=body)
        else:
            request = session.post(sim.url + "/iaas/", data=body)
        async with request as response:
            if response.status != 200:  # QingCloud answers errors with 200 and a ret_code
                raise AssertionError(f"{action}: HTTP {response.status}")
            reply: dict[str, Any] = await response.json()
            return reply


async def admin(sim: Simulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One call to the simulator's ``/_sim/`` endpoints: (HTTP status, decoded JSON)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, sim.url + path, json=body) as response,
    ):
        return response.status, await response.json()


async def wait_job(sim: Simulator, job_id: str, timeout: float = 10.0) -> str:
    """Wait on the job's own completion event, then read its status through DescribeJobs."""
    job = sim.fleet.jobs.get(job_id)
    if job is None:
        raise AssertionError(f"job {job_id} unknown")
    await asyncio.wait_for(job.finished.wait(), timeout)
    [described] = (await call(sim, "DescribeJobs", {"jobs.1": job_id}))["job_set"]
    if described["job_id"] != job_id or not described["resource_ids"]:
        raise AssertionError(f"DescribeJobs answered {described}")
    return str(described["status"])


def random_network() -> str:
    """A /24 in 127.101.0.0–127.254.255.0, so parallel test runs rarely share addresses."""
    return f"127.{random.randint(101, 254)}.{random.randint(0, 255)}.0/24"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has exited: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Beacon:
    """A line-oriented TCP listener on 127.0.0.1 collecting messages from VM processes."""

    def __init__(self) -> None:
        self._messages: asyncio.Queue[str] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Beacon:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                await self._messages.put(line.decode().strip())
        finally:
            writer.close()

    async def next(self, timeout: float = 10.0) -> str:
        return await asyncio.wait_for(self._messages.get(), timeout)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


DAEMON = """
import os, socket, sys
ip, port, beacon = os.environ["PITRIX_VM_IP"], int(sys.argv[1]), int(sys.argv[2])
listener = socket.create_server((ip, port))
report = socket.create_connection(("127.0.0.1", beacon))
report.sendall(f"{os.environ['PITRIX_VM_ID']} {os.getpid()} {os.getsid(0)} {ip}:{port}\\n".encode())
report.close()
while True:
    conn, _ = listener.accept()
    conn.sendall(os.environ["PITRIX_VM_ID"].encode())
    conn.close()
"""


def daemon_userdata(beacon_port: int, port: int = 8000, marker: str = "booted") -> str:
    """Userdata that records a boot in ``/var/log/boots`` and starts a setsid daemon on ``ip:port``.

    The daemon reports ``<instance id> <pid> <sid> <ip>:<port>`` to the beacon once it listens.
    """
    script = shlex.quote(DAEMON)
    return f"""#!/bin/sh
set -e
echo {shlex.quote(marker)} "$PITRIX_VM_ID" "$(pwd)" >> "$PITRIX_VM_ROOT/var/log/boots"
setsid python3 -c {script} {port} {beacon_port} > "$PITRIX_VM_ROOT/var/log/daemon.log" 2>&1 < /dev/null &
echo started
"""
