"""pitrix-metad in one object: the mirror, the instance API and the management API over one Store."""

from __future__ import annotations

import asyncio

from aiohttp import web

from pitrix.logs import get_logger
from pitrix.metad import instance_api, manage_api
from pitrix.metad.leases import HeartbeatLeases
from pitrix.metad.mirror import Mirror
from pitrix.store import Store

DEFAULT_WAIT_TIMEOUT = 60.0
DEFAULT_KEEPALIVE = 10.0


class MetadError(Exception):
    """metad could not start (a port in use, an address not local, etcd unreachable)."""


class Metad:
    """Both APIs of one metad, bound to ``listen_ip``; port 0 picks a free port (tests)."""

    def __init__(
        self,
        store: Store,
        listen_ip: str,
        instance_port: int = 8080,
        manage_port: int = 9611,
        *,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        keepalive: float = DEFAULT_KEEPALIVE,
    ) -> None:
        for name, port in (("instance_port", instance_port), ("manage_port", manage_port)):
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise MetadError(f"{name}: {port!r} is not a TCP port (0..65535)")
        if wait_timeout <= 0:
            raise MetadError(f"wait_timeout: {wait_timeout!r} must be positive")
        self.store = store
        self.listen_ip = listen_ip
        self.mirror = Mirror(store)
        self.leases = HeartbeatLeases(store)
        self._ports = {"instance": instance_port, "manage": manage_port}
        self._wait_timeout = wait_timeout
        self._keepalive = keepalive
        self._closing = asyncio.Event()
        self._runners: dict[str, web.AppRunner] = {}
        self._bound: dict[str, int] = {}
        self._log = get_logger("pitrix.metad", listen_ip=listen_ip)

    def _url(self, which: str) -> str:
        if which not in self._bound:
            raise MetadError("metad is not started")
        host = f"[{self.listen_ip}]" if ":" in self.listen_ip else self.listen_ip
        return f"http://{host}:{self._bound[which]}"

    @property
    def instance_url(self) -> str:
        return self._url("instance")

    @property
    def manage_url(self) -> str:
        return self._url("manage")

    async def start(self) -> None:
        await self.mirror.start()
        apps = {
            "instance": instance_api.build_app(self.mirror, self.store, self.leases, self._wait_timeout),
            "manage": manage_api.build_app(self.mirror, self.store, self._keepalive, self._closing),
        }
        try:
            for which, app in apps.items():
                runner = web.AppRunner(
                    app,
                    handle_signals=False,
                    access_log=None,
                    handler_cancellation=True,
                    shutdown_timeout=2.0,
                )
                await runner.setup()
                self._runners[which] = runner
                site = web.TCPSite(runner, self.listen_ip, self._ports[which], backlog=4096)
                try:
                    await site.start()
                except OSError as exc:
                    where = f"{self.listen_ip}:{self._ports[which]}"
                    raise MetadError(
                        f"{which}_port: cannot listen on {where}: {exc.strerror or exc}"
                    ) from exc
                self._bound[which] = int(runner.addresses[0][1])
        except BaseException:
            await self.stop()
            raise
        self._log.info("metad serving", instance_url=self.instance_url, manage_url=self.manage_url)

    async def stop(self) -> None:
        self._closing.set()
        # Held long-polls answer with the current value instead of holding the shutdown up.
        self.mirror.waiters.notify_all(self.mirror.revision)
        for runner in self._runners.values():
            await runner.cleanup()
        self._runners.clear()
        self._bound.clear()
        await self.mirror.stop()

    async def __aenter__(self) -> Metad:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
