"""The simulator: a fake QingCloud whose VMs are real processes on loopback addresses.

One object owns the HTTP API, the VMs and their addresses; ``stop`` terminates every VM, so a
simulator that was stopped leaves no process and no VM directory behind. Its ledger lists every
VM it ever created, which is what leak checks compare against.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import string
from pathlib import Path
from typing import Any

from aiohttp import web

from pitrix.logs import get_logger
from pitrix.paths import ensure_dir
from simulator.admin_api import AdminApi
from simulator.ec2_api import Ec2Api
from simulator.faults import Faults
from simulator.fleet import Fleet
from simulator.images import ImageCatalog
from simulator.network import LOOPBACK, AddressPool, claim
from simulator.openstack_api import OpenStackApi
from simulator.qingcloud_api import QingCloudApi
from simulator.userdata import REQUEST_LIMIT
from simulator.vm import SSH_PORT

_KEY_ALPHABET = string.ascii_uppercase
_SECRET_ALPHABET = string.ascii_letters + string.digits


def generate_credentials() -> dict[str, str]:
    """A QingCloud-looking access key pair (20 upper-case letters, 40-character secret)."""
    return {
        "access_key_id": "".join(secrets.choice(_KEY_ALPHABET) for _ in range(20)),
        "secret_access_key": "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40)),
    }


def _check_credentials(credentials: dict[str, str]) -> dict[str, str]:
    for key in ("access_key_id", "secret_access_key"):
        value = credentials.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"credentials: {key} must be a non-empty string")
    return {
        "access_key_id": credentials["access_key_id"],
        "secret_access_key": credentials["secret_access_key"],
    }


def _check_host(host: str) -> str:
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"host: {host!r} must be an IPv4 loopback address such as 127.0.0.1") from None
    if address not in LOOPBACK:
        raise ValueError(f"host: {host} is not a loopback address; the simulator serves 127.0.0.0/8 only")
    return host


class Simulator:
    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        network: str = "127.100.0.0/16",
        images_dirs: list[Path] | None = None,
        credentials: dict[str, str] | None = None,
        zone: str = "sim1",
        light: bool = False,
        ssh_port: int = SSH_PORT,
        fault_seed: int | None = None,
        light_workers: int = 1,
        log_level: str = "info",
        vxnets: list[str] | None = None,
    ) -> None:
        if not zone:
            raise ValueError("zone: must not be empty")
        if not 0 <= port < 65536:
            raise ValueError(f"port: {port} is not a TCP port")
        self.state_dir = Path(state_dir)
        self.host = _check_host(host)
        self.port = port
        self.zone = zone
        self._credentials = (
            _check_credentials(credentials) if credentials is not None else generate_credentials()
        )
        self.pool = AddressPool(network)
        self._claim: socket.socket | None = None
        self.images = ImageCatalog(images_dirs)
        if not 0 < ssh_port < 65536:
            raise ValueError(f"ssh_port: {ssh_port} is not a TCP port")
        self.light = light
        self.faults = Faults(fault_seed)
        if light_workers < 1:
            raise ValueError(f"light_workers: {light_workers} is not a positive number of processes")
        self.fleet = Fleet(
            self.state_dir,
            self.pool,
            self.images,
            zone,
            faults=self.faults,
            light=light,
            ssh_port=ssh_port,
            light_workers=light_workers,
            log_level=log_level,
        )
        for vxnet_id in vxnets or ():  # besides vxnet-0; ValueError names a bad id
            self.fleet.vxnets.create(vxnet_id)
        self.light_worker_pids: list[int] = []
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._log = get_logger("simulator", zone=zone)

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("simulator: not started")
        return self._url

    @property
    def credentials(self) -> dict[str, str]:
        """``{"access_key_id", "secret_access_key"}``: the one key pair this cloud accepts."""
        return dict(self._credentials)

    def runtime(self) -> dict[str, Any]:
        """A runtime definition for ``QingCloudProvider.from_runtime`` pointing at this simulator."""
        return {
            "provider": "qingcloud",
            "endpoint": self.url,
            "zone": self.zone,
            **self._credentials,
            "hypervisor": "simulator",  # what AppCenter-profile apps read as /host/hypervisor
        }

    def aws_runtime(self) -> dict[str, Any]:
        """A runtime definition for ``AwsProvider.from_runtime``: the EC2 face of this simulator
        (region = the zone; SSH on the simulator's port, not EC2's 22)."""
        return {
            "provider": "aws",
            "endpoint": self.url + "/ec2/",
            "region": self.zone,
            **self._credentials,
            "ssh_port": self.fleet.ssh_port,
        }

    async def start(self) -> str:
        """Serve the API; returns the endpoint URL (``http://host:port``)."""
        if self._runner is not None:
            return self._url
        held = claim(self.pool)  # before anything is touched: another simulator may serve this network
        try:
            url = await self._start()
        except BaseException:
            held.close()
            raise
        self._claim = held
        return url

    async def _start(self) -> str:
        ensure_dir(self.state_dir)
        ensure_dir(self.state_dir / "vms")
        await self.fleet.reap_leftovers()
        self.light_worker_pids = await self.fleet.start_light_workers()
        api = QingCloudApi(
            self.fleet,
            self.zone,
            {self._credentials["access_key_id"]: self._credentials["secret_access_key"]},
            self.faults,
        )
        app = web.Application(client_max_size=REQUEST_LIMIT)  # UploadUserDataAttachment's 2 MiB
        app.add_routes(api.routes())
        app.add_routes(OpenStackApi(self.fleet, self._credentials, self.zone).routes())
        app.add_routes(AdminApi(self.fleet, self.faults).routes())
        app.add_routes(Ec2Api(self.fleet, self._credentials, self.zone, self.faults).routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(f"simulator: cannot listen on {self.host}:{self.port}: {exc.strerror}") from exc
        server = site._server  # aiohttp does not expose the bound port otherwise
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        self._runner = runner
        self._url = f"http://{self.host}:{self.port}"
        self._log.info("simulator.started", url=self._url, network=str(self.pool.network))
        return self._url

    async def stop(self) -> None:
        """Stop serving, then terminate every VM (killing all their processes)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.fleet.shutdown()
        if self._claim is not None:  # its VMs are gone: the network is free for another
            self._claim.close()
            self._claim = None
        self._log.info("simulator.stopped", vms=len(self.fleet.ledger()))

    def ledger(self) -> list[dict[str, Any]]:
        """Every VM ever created: instance_id, name, ip, image, status, created, terminated."""
        return self.fleet.ledger()

    def volume_ledger(self) -> list[dict[str, Any]]:
        """Every volume ever created: volume_id, name, size, status, instance_id, path, created, deleted."""
        return self.fleet.volume_ledger()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
