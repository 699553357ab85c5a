"""A private simulator and pitrixd as separate processes, with a runtime registered: what the
orchestration benchmark and the chaos suite drive. Killing pitrixd never kills the cloud."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs
from pitrix.cli.client import ApiClient, ApiError
from pitrix.cli.demo import sim_runtime
from simulator.network import NETWORK_IN_USE_EXIT

NETWORK_DRAWS = 10  # networks drawn before giving up: each in use by another simulator

# Boot delay 0 (the simulator has none) and service commands that do nothing: what is left is pitrix.
TRIVIAL_APP: dict[str, Any] = {
    "name": "trivial",
    "version": "1.0.0",
    "roles": [
        {
            "name": "node",
            "count": 3,
            "image": "demo",
            "services": {"start": {"cmd": "true", "timeout": 30}, "stop": {"cmd": "true", "timeout": 30}},
        }
    ],
}


@dataclass
class Stack:
    workdir: Path
    network: str
    sim: procs.Child | None = None
    pitrixd: procs.Child | None = None
    restarts: int = 0
    token: str = ""
    pitrixd_log_level: str = "warning"  # "info" to count what it retried (tests/chaos)
    # The network was drawn at random (``procs.private_net``): if another simulator serves it (a
    # test running alongside drew the same block), draw another. Off for a caller that derives
    # addresses from its network.
    redraw_network: bool = False

    def api(self) -> ApiClient:
        """A client of pitrixd with the stack's admin token."""
        return ApiClient(self.api_url, self.token)

    @property
    def api_url(self) -> str:
        assert self.pitrixd is not None
        return str(self.pitrixd.ready["url"])

    @property
    def sim_url(self) -> str:
        assert self.sim is not None
        return str(self.sim.ready["url"])

    async def start_sim(self, *extra: str) -> None:
        """Two simulators on one network would each reach the other's VMs (a pitrixd waited out
        a 120 s deadline on a metad that was not its own): the simulator refuses a network
        another one serves, and a drawn network is drawn again."""
        for draw in range(1, NETWORK_DRAWS + 1):
            try:
                self.sim = await procs.start(
                    "pitrix-sim",
                    [
                        procs.bin_path("pitrix-sim"),
                        "--state-dir",
                        str(self.workdir / "sim"),
                        "--port",
                        "0",
                        "--network",
                        self.network,
                        "--log-level",
                        "warning",
                        *extra,
                    ],
                    self.workdir / "sim.log",
                )
                return
            except procs.ChildExited as exc:
                if exc.returncode != NETWORK_IN_USE_EXIT or not self.redraw_network or draw == NETWORK_DRAWS:
                    raise
                self.network = f"127.{procs.private_net()}.0.0/16"

    async def start_pitrixd(self) -> None:
        """Start pitrixd on its state dir (again after a kill: it resumes from its journal)."""
        self.token = self.token or secrets.token_urlsafe(24)
        tokens = json.dumps([{"token": self.token, "owner": "bench", "admin": True}])
        self.pitrixd = await procs.start(
            "pitrixd",
            [
                procs.bin_path("pitrixd"),
                "--state-dir",
                str(self.workdir / "pitrixd"),
                "--api-listen",
                "127.0.0.1:0",
                "--log-level",
                self.pitrixd_log_level,
            ],
            self.workdir / "pitrixd.log",
            {"PITRIX_API__TOKENS": tokens},
        )

    async def kill_pitrixd(self) -> None:
        assert self.pitrixd is not None
        await self.pitrixd.kill()
        self.restarts += 1

    async def register_runtime(self, api: ApiClient) -> None:
        assert self.sim is not None
        # One metadata VM: the figures measure the app clusters, as they did before HA.
        await api.post("/v1/runtimes", {**sim_runtime(self.sim.ready), "metadata_size": 1})

    async def ledger(self) -> list[dict[str, Any]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.sim_url}/_sim/ledger") as response,
        ):
            return list((await response.json())["instances"])

    async def stop(self) -> None:
        for child in (self.pitrixd, self.sim):
            if child is not None:
                await child.stop()


@contextlib.asynccontextmanager
async def running_stack(
    workdir: Path, *sim_args: str, pitrixd_log_level: str = "warning"
) -> AsyncIterator[Stack]:
    stack = Stack(
        workdir, f"127.{procs.private_net()}.0.0/16", pitrixd_log_level=pitrixd_log_level, redraw_network=True
    )
    try:
        await stack.start_sim(*sim_args)
        await stack.start_pitrixd()
        async with stack.api() as api:
            await stack.register_runtime(api)
        yield stack
    finally:
        await stack.stop()


async def wait_state(
    api: ApiClient, cid: str, job_id: str | None = None, timeout: float = 300
) -> dict[str, Any]:
    """Hold on pitrixd's wait endpoint until the cluster's job has ended; the cluster view."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    view: dict[str, Any] = await api.get(f"/v1/clusters/{cid}/wait", timeout=60, job=job_id)
                    return view
                except ApiError as exc:  # 408: still going; ask again
                    if exc.status != 408:
                        raise
    except TimeoutError:
        now = await api.get(f"/v1/clusters/{cid}")
        job = now.get("job") or {}
        steps = [f"{s['name']}:{s['status']}" for s in job.get("steps", [])]
        raise RuntimeError(
            f"cluster {cid} not done with job {job_id} in {timeout:.0f}s: state {now['state']}, "
            f"job {now.get('job_id')} {job.get('status')}, steps {steps}"
        ) from None


def metad_pids(workdir: Path) -> list[int]:
    """The pitrix-metad processes of the metadata VMs the simulator under ``workdir`` runs: found
    by their command line (their state dir is inside the VM's root), since the simulator starts
    them from the VMs' userdata and tells nobody their pids."""
    marker = str(workdir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(arg.endswith(b"pitrix-metad") for arg in argv[:2]) and any(marker in arg for arg in argv):
            found.append(int(entry.name))
    return sorted(found)


def vm_ip(pid: int) -> str:
    """The address of the simulated VM the process ``pid`` runs in (its ``PITRIX_VM_IP``)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    environ = dict(line.split(b"=", 1) for line in raw if b"=" in line)
    return environ[b"PITRIX_VM_IP"].decode()


async def metad_health(pid: int) -> dict[str, Any]:
    """The healthz answer of the metad ``pid`` (``metad_pids``) on its instance port, asked as an
    unidentified peer (healthz answers from memory, to anyone); {} if it cannot be asked."""
    try:
        ip = vm_ip(pid)
        connector = aiohttp.TCPConnector(ssl=False)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"https://{ip}:8080/healthz") as response,
        ):
            body = await response.json()
    except (OSError, KeyError, ValueError, aiohttp.ClientError, TimeoutError):
        return {}
    return body if isinstance(body, dict) else {}


def cpu_of(pids: list[int]) -> float:
    """CPU seconds of those of ``pids`` still alive."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += procs.cpu_seconds(pid)
    return total
