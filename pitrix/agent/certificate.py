"""The agent's client certificate: its first one fetched with a bootstrap token, then renewed.

The cloud names an instance only after its userdata is written, so userdata cannot carry a
certificate naming it; it carries a one-time token instead, which metad exchanges for a
certificate once the runtime has mapped the instance (``POST /self/bootstrap``; until then metad
answers 404 and the agent asks again). After that the agent renews through ``POST /self/cert``
once two thirds of the certificate's life are gone, so a short-lived certificate never lapses.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitrix.agent.durable import write_durably
from pitrix.agent.errors import BackendError, ConfigError
from pitrix.agent.httpclient import HttpClient
from pitrix.agent.log import get_logger
from pitrix.backoff import Backoff
from pitrix.metad import keyspace

if TYPE_CHECKING:
    import datetime as dt

    # pki (and the cryptography package) is loaded by the first key or CSR this agent makes: a
    # running agent with a good certificate never needs it.
    from pitrix import pki

# After a failed renewal the current certificate (still valid) is kept, and the next attempt waits
# this long, doubling up to the cap: a revoked agent must not ask on every request it makes.
RENEW_RETRY_FIRST = 5.0
RENEW_RETRY_MAX = 300.0


class AgentCertificate:
    """Owns the TLS context the agent's metad connections use, and keeps its certificate fresh."""

    def __init__(
        self,
        cert: Path | None,
        key: Path | None,
        ca: Path | None,
        bootstrap_token: str = "",
        bind_address: str | None = None,
        bootstrap_patience: float = 10.0,
    ) -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self.token = bootstrap_token
        self.bootstrap_patience = bootstrap_patience
        # metad accepts a bootstrap token only from its instance's address, as the agent's other
        # connections come from.
        self.bind_address = bind_address
        self._renew_retry_at: float | None = None
        self._renew_backoff = Backoff(RENEW_RETRY_FIRST, RENEW_RETRY_MAX)
        self._renewal_key: pki.PrivateKey | None = None
        self._lock = asyncio.Lock()
        self._log = get_logger("pitrix.agent.certificate")
        self._not_before: dt.datetime | None = None
        self._not_after: dt.datetime | None = None
        self.context: ssl.SSLContext | None = None
        self.generation = 0  # bumped whenever the context changes: sessions made before are stale
        self.renewals = 0
        if cert is None and ca is None:
            return
        if self._usable():
            self.context = self._load()
        elif not (self.token and cert is not None and key is not None):
            self.context = self._load()  # raises the ConfigError that says what is wrong

    # -- state ------------------------------------------------------------------------------------

    def _usable(self) -> bool:
        """A certificate file that parses, has not expired, and (with a key) loads."""
        if self.cert is None:
            return True
        import datetime as dt  # here: an agent without a client certificate never needs it

        from pitrix.agent.certdates import validity

        try:
            not_before, not_after = validity(self.cert.read_bytes())
        except (OSError, ValueError):
            return False
        now = dt.datetime.now(dt.UTC)
        if not_after <= now:
            return False
        try:
            self._bare_context().load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        except (OSError, ssl.SSLError):
            return False  # e.g. a crash between writing the key and the certificate
        self._not_before, self._not_after = not_before, not_after
        return True

    def _bare_context(self) -> ssl.SSLContext:
        """Verifies metad against the CA file (which may be an intermediate: the cluster's issuer)."""
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"client_cakeys: {self.ca}: {getattr(exc, 'strerror', None) or exc}") from None
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    def _load(self) -> ssl.SSLContext:
        ctx = self._bare_context()
        if self.cert is not None:
            try:
                ctx.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
            except (OSError, ssl.SSLError) as exc:
                why = getattr(exc, "strerror", None) or exc
                raise ConfigError(f"client_cert/client_key: {self.cert}, {self.key}: {why}") from None
        return ctx

    def _renewal_due(self, now: dt.datetime | None = None) -> bool:
        """Whether the certificate is past its renewal time (``now``: the clock's, unless a test
        says otherwise)."""
        if self._not_before is None or self._not_after is None:
            return False
        if self._renew_retry_at is not None and asyncio.get_running_loop().time() < self._renew_retry_at:
            return False
        import datetime as dt

        from pitrix.certtime import renewal_time

        return (now or dt.datetime.now(dt.UTC)) >= renewal_time(self._not_before, self._not_after)

    # -- keeping it fresh -------------------------------------------------------------------------

    async def ensure(self, nodes: list[str], http: HttpClient | None) -> None:
        """Before a request: fetch the first certificate, or renew one that is due."""
        if self.cert is None or (self.context is not None and not self._renewal_due()):
            return
        async with self._lock:
            if self.context is None:
                await self._bootstrap(nodes)
            elif self._renewal_due() and http is not None:
                await self._renew(nodes, http)

    def _bootstrap_key(self) -> pki.PrivateKey:
        """The key to ask for the first certificate with: kept on disk (0600) before asking.

        metad answers a token once; should that answer be lost (a crash, a cut connection), it
        hands the same certificate again only to the same key.
        """
        from pitrix import pki

        assert self.key is not None
        try:
            return pki.key_from_pem(self.key.read_bytes())
        except (OSError, pki.PKIError):
            pass
        key = pki.generate_key()
        self.key.parent.mkdir(parents=True, exist_ok=True)
        write_durably(self.key, pki.key_to_pem(key), 0o600)
        return key

    async def _bootstrap(self, nodes: list[str]) -> None:
        from pitrix import pki

        assert self.cert is not None and self.key is not None
        key = await asyncio.to_thread(self._bootstrap_key)
        csr = pki.make_csr(key, pki.Subject(cn="bootstrap")).decode()
        body = {"token": self.token, "csr": csr}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bootstrap_patience
        backoff = Backoff(0.05, 1.0)
        http = HttpClient(ssl_context=self._bare_context(), local_address=self.bind_address)
        try:
            while True:
                answer, why = await self._post_any(http, nodes, keyspace.SELF_BOOTSTRAP, body)
                if answer is not None:
                    break
                if "HTTP 403" in why or "HTTP 409" in why:
                    # Revoked, expired, used, or asked from the wrong address: asking again will not help.
                    raise BackendError(f"metad: bootstrap refused ({why})")
                delay = backoff.next()
                if loop.time() + delay > deadline:
                    raise BackendError(f"metad: no certificate for the bootstrap token yet ({why})")
                await asyncio.sleep(delay)  # the runtime maps the instance moments after it runs
        finally:
            await http.close()
        self._store(key, answer)
        self._log.info("certificate bootstrapped", serial=answer.get("serial"))

    async def _renew(self, nodes: list[str], http: HttpClient) -> None:
        from cryptography import x509

        from pitrix import pki

        assert self.cert is not None
        current = x509.load_pem_x509_certificate(self.cert.read_bytes())
        # Kept until a renewal succeeds: metad hands a lost answer again only to the same key.
        key = self._renewal_key = self._renewal_key or pki.generate_key()
        csr = pki.make_csr(key, pki.Subject.of(current.subject)).decode()
        answer, why = await self._post_any(http, nodes, keyspace.SELF_CERT, {"csr": csr})
        if answer is None:
            # Keep the current certificate (still valid) and try again after a while.
            delay = self._renew_backoff.next()
            self._log.warning(
                "certificate renewal failed; retrying later", error=why, retry_in=round(delay, 3)
            )
            self._renew_retry_at = asyncio.get_running_loop().time() + delay
            return
        self._store(key, answer)
        self._renewal_key = None
        self._renew_retry_at = None
        self._renew_backoff.reset()
        self.renewals += 1
        self._log.info("certificate renewed", serial=answer.get("serial"))

    async def _post_any(
        self, http: HttpClient, nodes: list[str], path: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, str]:
        """The first node's certificate answer, or None and why none gave one."""
        errors = []
        data = json.dumps(body).encode()
        for base in nodes:
            try:
                resp = await http.request(
                    "POST", base, path, body=data, headers={"Content-Type": "application/json"}, timeout=10
                )
                text = resp.text()
                if resp.status == 200:
                    return dict(json.loads(text)), ""
                if resp.status == 403:
                    self._log.error("metad refuses this instance's certificate", answer=text[:200])
                errors.append(f"{base}: HTTP {resp.status}: {text[:120]}")
            except (TimeoutError, OSError, ValueError) as exc:
                errors.append(f"{base}: {type(exc).__name__}: {exc}")
        return None, "; ".join(errors)

    def _store(self, key: pki.PrivateKey, answer: dict[str, Any]) -> None:
        from pitrix import pki

        assert self.cert is not None and self.key is not None
        certificate = str(answer.get("certificate") or "").encode()
        if b"BEGIN CERTIFICATE" not in certificate:
            raise BackendError(f"metad: the certificate answer holds no certificate: {answer!r:.200}")
        self.key.parent.mkdir(parents=True, exist_ok=True)
        write_durably(self.key, pki.key_to_pem(key), 0o600)
        write_durably(self.cert, certificate, 0o644)
        if not self._usable():
            raise BackendError("metad: the certificate it signed does not load with the new key")
        self.context = self._load()
        self.generation += 1
