"""pitrix-metad in one object: the mirror, the instance API and the management API over one Store
(whose watches run on channels of their own, its watch pool)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Iterable

from aiohttp import web

from pitrix import pki
from pitrix.aio import cancel_and_wait
from pitrix.logs import get_logger
from pitrix.metad import instance_api, manage_api
from pitrix.metad.gate import GATES_KEY, Decision, GatedSite, Gates, gate_hook
from pitrix.metad.identity import (
    CertificateIdentity,
    Identity,
    SourceIPIdentity,
    is_revoked,
    peer_certificate,
)
from pitrix.metad.leases import HeartbeatLeases
from pitrix.metad.limits import (
    DEFAULT_WAIT_TIMEOUT,
    RESERVED_DESCRIPTORS,
    Admission,
    ConnectionLimits,
    raise_descriptor_limit,
)
from pitrix.metad.mirror import Mirror
from pitrix.metad.parking import Parking
from pitrix.metad.peering import Peering
from pitrix.metad.tls import MetadTLS
from pitrix.store import Store

DEFAULT_KEEPALIVE = 10.0


def _management_source(source: str) -> Decision:
    """A plain management port (legacy) is reachable only where the operator chose: its peers are
    the runtime's, and its watch streams must outlive an unidentified connection's one request."""
    return f"management:{source}", True


class MetadError(Exception):
    """metad could not start (a port in use, an address not local, etcd unreachable)."""


class Metad:
    """Both APIs of one metad, bound to ``listen_ip``; port 0 picks a free port (tests).

    With ``tls`` both ports speak HTTPS and require a client certificate: instances are who their
    certificate names, and only the runtime's certificate reaches the management API. Without it
    metad runs metad's legacy model (identity = source address, management API open to whoever
    reaches its port), which the CLI offers only behind ``--legacy-source-ip`` and with the
    management API on its own address (``manage_listen_ip``, loopback) unless told otherwise.

    Every connection goes through ``pitrix.metad.gate`` under ``limits``: handshake, header and
    idle timeouts, caps per source and in all, with room only known identities may use.
    """

    def __init__(
        self,
        store: Store,
        listen_ip: str,
        instance_port: int = 8080,
        manage_port: int = 9611,
        *,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        keepalive: float = DEFAULT_KEEPALIVE,
        tls: MetadTLS | None = None,
        trusted_proxies: Iterable[str] = (),
        limits: ConnectionLimits | None = None,
        manage_listen_ip: str | None = None,
        park_idle_polls: bool = True,
        peering: Peering | None = None,
    ) -> None:
        for name, port in (("instance_port", instance_port), ("manage_port", manage_port)):
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise MetadError(f"{name}: {port!r} is not a TCP port (0..65535)")
        if wait_timeout <= 0:
            raise MetadError(f"wait_timeout: {wait_timeout!r} must be positive")
        self.tls = tls
        try:
            self._ssl = tls.manage_context() if tls is not None else None
            # With an issuer, instances without a certificate may connect to fetch one.
            self._instance_ssl = (
                tls.server_context(certificate_optional=tls.issuer is not None) if tls is not None else None
            )
        except pki.PKIError as exc:
            raise MetadError(str(exc)) from None
        try:
            self.identity: Identity = (
                CertificateIdentity() if tls is not None else SourceIPIdentity(trusted_proxies)
            )
        except ValueError as exc:
            raise MetadError(f"trusted_proxies: {exc}") from None
        self.store = store
        self.listen_ip = listen_ip
        self.manage_listen_ip = manage_listen_ip or listen_ip
        self.limits = limits if limits is not None else ConnectionLimits()
        self.admission: Admission | None = None
        self.leases = HeartbeatLeases(store)
        self.mirror = Mirror(store, on_gone=self.leases.forget)
        self._ports = {"instance": instance_port, "manage": manage_port}
        self._wait_timeout = wait_timeout
        # Idle long-polls held at the connection's gate rather than in aiohttp: ~8 KiB less per
        # idle instance, paid as parsing in the fan-out window (docs/internals.md, "Parked
        # long-polls"); off gives the lower-latency, heavier path.
        self._park_idle_polls = park_idle_polls
        self.peering = peering  # its embedded etcd's peer set-up (management API), if it runs one
        self._keepalive = keepalive
        self._closing = asyncio.Event()
        self._runners: dict[str, web.AppRunner] = {}
        self._bound: dict[str, int] = {}
        self._log = get_logger("pitrix.metad", listen_ip=listen_ip)
        self._renewal: asyncio.Task[None] | None = None
        # Idle long-polls held at the instance port's gates (mutual TLS only: pitrix.metad.parking).
        self._parking: Parking | None = None
        # Set at each renewal of a self-issued server certificate (tests and embedders wait on it).
        self.server_renewed = asyncio.Event()

    def _url(self, which: str) -> str:
        if which not in self._bound:
            raise MetadError("metad is not started")
        ip = self.listen_ip if which == "instance" else self.manage_listen_ip
        host = f"[{ip}]" if ":" in ip else ip
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{host}:{self._bound[which]}"

    @property
    def instance_url(self) -> str:
        return self._url("instance")

    @property
    def manage_url(self) -> str:
        return self._url("manage")

    async def start(self) -> None:
        await self.mirror.start()
        apps = {
            "instance": instance_api.build_app(
                self.mirror,
                self.store,
                self.leases,
                self._wait_timeout,
                self.identity,
                self.tls.issuer if self.tls is not None else None,
                self.tls.instance_lifetime if self.tls is not None else pki.INSTANCE_LIFETIME,
                self.tls.renewal_grace if self.tls is not None else 0.0,
            ),
            "manage": manage_api.build_app(
                self.mirror,
                self.store,
                self._keepalive,
                self._closing,
                require_cert=self._ssl is not None,
                peering=self.peering,
                leases=self.leases,
            ),
        }
        limits = self._fitted_limits()
        if self._park_idle_polls and isinstance(self.identity, CertificateIdentity):
            self._parking = Parking(
                self.mirror, self.identity, self._wait_timeout, apps["instance"][instance_api.SHARED_KEY]
            )
        exempt = (
            frozenset(self.identity.trusted_proxies)
            if isinstance(self.identity, SourceIPIdentity)
            else frozenset()
        )
        self.admission = Admission(limits, exempt)
        try:
            for which, app in apps.items():
                ssl_context = self._instance_ssl if which == "instance" else self._ssl
                gates = Gates(
                    self.admission,
                    None,  # the runner's server, once set up
                    ssl_context,
                    self._classify_tls,
                    self._classify_source if which == "instance" else _management_source,
                    parking=self._parking if which == "instance" else None,
                )
                app[GATES_KEY] = gates
                if which == "manage":  # the instance app's routes tell their gate themselves
                    app.middlewares.insert(0, gate_hook)
                runner = web.AppRunner(
                    app,
                    handle_signals=False,
                    access_log=None,
                    handler_cancellation=True,
                    shutdown_timeout=2.0,
                    keepalive_timeout=limits.idle_timeout,
                )
                await runner.setup()
                self._runners[which] = runner
                server = runner.server
                assert server is not None
                gates.handler_factory = server
                ip = self.listen_ip if which == "instance" else self.manage_listen_ip
                site = GatedSite(runner, ip, self._ports[which], gates, backlog=4096)
                try:
                    await site.start()
                except OSError as exc:
                    where = f"{ip}:{self._ports[which]}"
                    raise MetadError(
                        f"{which}_port: cannot listen on {where}: {exc.strerror or exc}"
                    ) from exc
                self._bound[which] = int(runner.addresses[0][1])
        except BaseException:
            await self.stop()
            raise
        self._log.info("metad serving", instance_url=self.instance_url, manage_url=self.manage_url)
        if self.tls is not None and self.tls.server_renewal_due() is not None:
            self._renewal = asyncio.create_task(self._renew_server_certificate(), name="server-cert-renewal")

    def _fitted_limits(self) -> ConnectionLimits:
        """The limits, ``max_connections`` lowered to what this process's descriptors allow."""
        descriptors = raise_descriptor_limit(self.limits.max_connections + RESERVED_DESCRIPTORS)
        limits = self.limits.fitted(descriptors)
        if limits is not self.limits:
            self._log.warning(
                "descriptor limit below max_connections; lowered (raise LimitNOFILE)",
                descriptors=descriptors,
                max_connections=limits.max_connections,
                max_unidentified=limits.max_unidentified,
            )
        return limits

    def _classify_tls(self, transport: asyncio.BaseTransport) -> Decision:
        """Known: a verified, unrevoked client certificate (the runtime's speaks for many)."""
        cert = peer_certificate(transport.get_extra_info("ssl_object"))
        if cert is None or is_revoked(self.mirror, cert):
            return None
        if cert.subject.is_management:
            return f"management:{cert.subject.cn}", True
        return f"instance:{cert.subject.cn}", False

    def _classify_source(self, source: str) -> Decision:
        """Legacy model: a trusted proxy or a mapped instance's address is known."""
        identity = self.identity
        if isinstance(identity, SourceIPIdentity) and source in identity.trusted_proxies:
            return f"proxy:{source}", True
        iid = self.mirror.by_ip.get(source)
        return (f"instance:{iid}", False) if iid is not None else None

    async def _renew_server_certificate(self) -> None:
        """Replace a self-issued server certificate at 2/3 of its life, for new handshakes.

        A metad lives as long as its VM, which may outlive a certificate; only a restart used to
        make a new one. A failed renewal (a full disk) is tried again a minute later.
        """
        assert self.tls is not None
        while True:
            due = self.tls.server_renewal_due()
            assert due is not None
            wait = (due - dt.datetime.now(dt.UTC)).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await asyncio.to_thread(self.tls.reissue_server)
                for ctx in {id(c): c for c in (self._ssl, self._instance_ssl) if c is not None}.values():
                    ctx.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
            except (OSError, ssl.SSLError, pki.PKIError) as exc:
                self._log.error("server certificate renewal failed; retrying in 60 s", error=str(exc))
                await asyncio.sleep(60)
                continue
            self._log.info("server certificate renewed", due=due.isoformat())
            self.server_renewed.set()

    async def stop(self) -> None:
        self._closing.set()
        if self._renewal is not None:
            await cancel_and_wait(self._renewal)
            self._renewal = None
        # Held long-polls answer with the current value instead of holding the shutdown up.
        self.mirror.waiters.notify_all(self.mirror.revision)
        if self._parking is not None:
            self._parking.flush()
        for runner in self._runners.values():
            await runner.cleanup()
        self._runners.clear()
        self._bound.clear()
        await self.leases.close()
        await self.mirror.stop()

    async def __aenter__(self) -> Metad:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
