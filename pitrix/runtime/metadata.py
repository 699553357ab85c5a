"""Metadata clusters: one etcd + pitrix-metad per owner × runtime, made on first use.

Or one per runtime for all its owners, where the runtime's ``placement`` is ``per-runtime``; the
``holder`` of a metadata cluster is then :data:`SHARED` instead of an owner. Removed when its last
cluster is deleted, unless the runtime's ``metadata_retention`` is ``keep``.

Created under an etcd lock so two clusters created together share one; its record in etcd (with
the hash and expiry of the one-time token its metad buys its issuer certificate with) is written
before the VM is asked for, and the VM has a deterministic name, so a crash between the two never
makes a second one. The issuer's key is made on the VM; pitrixd signs its CSR, records the
certificate and the token's consumption, then hands it over (``issuer_exchange``): a restart
anywhere in between resumes. Removed when the owner's last cluster on the runtime is deleted.

A ready metadata cluster that does not answer its health check at once is waited for, not
rebuilt: under load, or while its VM restarts, a missed health check says nothing about the VM.
Only a VM the cloud no longer has is made again.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable

import aiohttp

from pitrix import pki
from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.metad.client import MetadManagementClient
from pitrix.providers.base import Instance, InstanceSpec, Provider
from pitrix.runtime import issuer_exchange
from pitrix.runtime.authority import Authority, issuer_from_pem, management_client_context, management_context
from pitrix.runtime.booting import wait_booted
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.keys import metadata_key, runtime_key
from pitrix.runtime.records import Cluster, MetadataCluster, Runtime
from pitrix.runtime.tunnel import Tunnel, open_tunnel
from pitrix.runtime.userdata import MetadTrust, metad_userdata
from pitrix.sealing import Sealer
from pitrix.store import Store

METADATA_IMAGE = "pitrix-metadata"
# A crashed pitrixd holds this lock until its lease runs out: keep the wait after a restart short.
LOCK_TTL = 5
# How long a ready metadata cluster may miss health checks before its VM is looked at again.
READY_PATIENCE = 60.0
# How long a metadata VM's issuer-bootstrap token is good for, from the moment it is made: the
# VM must boot and its metad offer its CSR within it, else the VM is made again with a new one.
ISSUER_TOKEN_TTL = 900.0


# The holder of a runtime's shared metadata cluster: not a possible owner name.
SHARED = "*"


def metadata_name(holder: str, runtime: str) -> str:
    """The metadata VM's deterministic instance name (a shared one's prefix no owner's can take)."""
    if holder == SHARED:
        return "pitrix-shared-meta-" + re.sub(r"[^a-z0-9-]", "-", runtime.lower())
    safe = re.sub(r"[^a-z0-9-]", "-", f"{holder}-{runtime}".lower())
    return f"pitrix-meta-{safe}"


def _via_ssh(definition: Runtime | None) -> bool:
    """Whether the runtime's definition asks for metad to be reached through SSH."""
    return bool(definition and definition.model_dump().get("metad_via_ssh"))


def _holder(definition: Runtime | None, owner: str) -> str:
    """Whose metadata cluster serves ``owner``'s clusters on a runtime: theirs, or the shared one."""
    return SHARED if definition is not None and definition.placement == "per-runtime" else owner


class MetadataClusters:
    def __init__(
        self,
        store: Store,
        provider_for: Callable[[str], Awaitable[Provider]],
        *,
        sealer: Sealer,
        tls: bool = True,
        keypairs: KeyPairs | None = None,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.provider_for = provider_for
        self.keypairs = keypairs or KeyPairs(store, sealer)  # the service's own, shared with the job steps
        self.tls = tls  # False: new metadata clusters speak plain HTTP with source-IP identity
        self._clients: dict[str, MetadManagementClient] = {}
        self._tunnels: dict[str, Tunnel] = {}  # by metadata VM instance id (runtimes with metad_via_ssh)
        self._authority: Authority | None = None
        self._management: pki.CertificateAuthority | None = None

    async def _runtime(self, name: str) -> Runtime | None:
        kv = await self.store.get(runtime_key(name))
        return Runtime.model_validate_json(kv.value) if kv else None

    async def _read(self, holder: str, runtime: str, definition: Runtime | None) -> MetadataCluster | None:
        """The record of ``holder``'s metadata cluster on ``runtime``; a ready one is made reachable."""
        kv = await self.store.get(metadata_key(holder, runtime))
        record = MetadataCluster.opened(kv.value, self.sealer) if kv else None
        if record is not None and record.issuer_pem and not record.holds_issuer_key:
            await self.management()  # client() is synchronous: have its CA at hand
        if record is not None and record.status == "ready":
            await self._reach(record, definition)
        return record

    async def _reach(self, record: MetadataCluster, definition: Runtime | None) -> None:
        """Open (or reopen) the SSH tunnel to the record's metad when its runtime wants one."""
        if not record.instance_id or not _via_ssh(definition):
            return
        tunnel = self._tunnels.get(record.instance_id)
        if tunnel is not None and tunnel.alive:
            return
        provider = await self.provider_for(record.runtime)
        pair = await self.keypairs.get(provider, record.owner, record.runtime)
        found = await provider.describe_instances(instance_ids=[record.instance_id])
        if not found:
            return  # the VM is gone: ensure makes it again
        self._tunnels[record.instance_id] = await open_tunnel(
            found[0], pair.private_key, keys=provider.host_keys
        )
        client = self._clients.pop(record.instance_id, None)
        if client is not None:
            await client.close()

    async def authority(self) -> Authority:
        if self._authority is None:
            self._authority = await Authority.load(self.store, self.sealer)
        return self._authority

    async def management(self) -> pki.CertificateAuthority:
        """The CA of the runtime's management certificates (kept in etcd, made on first use)."""
        if self._management is None:
            self._management = await (await self.authority()).management_ca(self.store, self.sealer)
        return self._management

    async def get(self, owner: str, runtime: str) -> MetadataCluster | None:
        """The metadata cluster serving ``owner``'s clusters on ``runtime``, if there is one."""
        definition = await self._runtime(runtime)
        return await self._read(_holder(definition, owner), runtime, definition)

    async def ensure(self, owner: str, runtime: str, timeout: float = 120.0) -> MetadataCluster:
        """The metadata cluster serving ``owner``'s clusters on ``runtime``, created and healthy."""
        definition = await self._runtime(runtime)
        holder = _holder(definition, owner)
        current = await self._read(holder, runtime, definition)
        if current and current.status == "ready" and await self._patient(current, holder, runtime):
            return current
        async with self.store.lock(f"metadata/{holder}/{runtime}", ttl=LOCK_TTL):
            return await self._ensure_locked(holder, runtime, timeout, definition)

    async def _ensure_locked(
        self, owner: str, runtime: str, timeout: float, definition: Runtime | None
    ) -> MetadataCluster:
        """``owner`` is the holder here: an owner, or :data:`SHARED`."""
        log = get_logger("pitrix.metadata", owner=owner, runtime=runtime)
        key = metadata_key(owner, runtime)
        record = await self._read(owner, runtime, definition)
        if record is None:
            record = MetadataCluster(owner=owner, runtime=runtime, name=metadata_name(owner, runtime))
            await self.store.put(key, record.sealed(self.sealer))
        if record.status == "ready" and await self._patient(record, owner, runtime):
            return record
        if record.status != "creating":
            record = record.model_copy(update={"status": "creating"})
            await self.store.put(key, record.sealed(self.sealer))
        provider = await self.provider_for(runtime)
        found = await self._vms(provider, record)
        if found and self._stranded(record):
            # Its token ran out before its metad asked: nothing can give it an issuer now.
            log.warning("metadata VM missed its issuer bootstrap; making it again", name=record.name)
            await provider.terminate_instances([i.instance_id for i in found])
            found = []
        if found:
            instance = found[0]
        else:
            log.info("creating metadata cluster", name=record.name)
            record, trust = await self._new_trust(record)
            await self.store.put(key, record.sealed(self.sealer))  # the token's hash before any VM holds it
            key_pair = ""
            if _via_ssh(definition):
                key_pair = (await self.keypairs.get(provider, owner, runtime)).cloud_id
            spec = InstanceSpec(
                name=record.name,
                image=METADATA_IMAGE,
                key_pair=key_pair,
                userdata=metad_userdata(trust),
                tags={"pitrix:owner": owner, "pitrix:role": "metadata"},
            )
            instance = (await provider.run_instances([spec]))[0]
        started = time.monotonic()
        (instance,) = await wait_booted(provider, [instance.instance_id], timeout)
        record = record.model_copy(update={"instance_id": instance.instance_id, "ip": instance.private_ip})
        await self.store.put(key, record.sealed(self.sealer))
        await self._reach(record, definition)
        if record.bootstrap_sha256:
            record = await self._bootstrap_issuer(record, started + timeout)
        await self._wait_healthy(record, timeout - (time.monotonic() - started))
        # Spent: the token's hash (the proofs' key) need not be kept any longer.
        record = record.model_copy(update={"status": "ready", "bootstrap_sha256": ""})
        await self.store.put(key, record.sealed(self.sealer))
        log.info("metadata cluster ready", ip=record.ip, instance_id=record.instance_id)
        return record

    def _stranded(self, record: MetadataCluster) -> bool:
        """A VM waiting for an issuer its token can no longer buy."""
        return (
            bool(record.bootstrap_sha256)
            and not record.issuer_pem
            and issuer_exchange.expired(record.bootstrap_expires)
        )

    async def _new_trust(self, record: MetadataCluster) -> tuple[MetadataCluster, MetadTrust | None]:
        """A new VM's userdata trust material (a fresh one-time token) and the record naming it."""
        if not self.tls:
            return record, None
        authority = await self.authority()
        token = secrets.token_urlsafe(32)
        record = record.model_copy(
            update={
                "issuer_pem": "",
                "bootstrap_sha256": hashlib.sha256(token.encode()).hexdigest(),
                "bootstrap_expires": time.time() + ISSUER_TOKEN_TTL,
                "bootstrap_consumed": 0.0,
            }
        )
        trust = MetadTrust(authority.ca_pem(), (await self.management()).cert_pem, token)
        return record, trust

    def _manage_base(self, record: MetadataCluster) -> str:
        tunnel = self._tunnels.get(record.instance_id)
        if tunnel is not None and tunnel.alive:
            return f"https://127.0.0.1:{tunnel.port}"
        return record.manage_url

    async def _bootstrap_issuer(self, record: MetadataCluster, deadline: float) -> MetadataCluster:
        """Sign the issuer the VM's metad made and hand it over; resumes wherever a crash left it."""
        await self.management()  # what the health checks below present
        log = get_logger("pitrix.metadata", owner=record.owner, runtime=record.runtime)
        key = metadata_key(record.owner, record.runtime)
        backoff = Backoff(0.02, 0.2)  # a CSR fetch is one small request: ask often
        while True:
            if record.issuer_pem and await self._healthy(record):
                return record  # an earlier push arrived: metad already serves with it
            try:
                if not record.issuer_pem:
                    if issuer_exchange.expired(record.bootstrap_expires):
                        raise TimeoutError(f"the issuer bootstrap token of {record.name} expired")
                    csr = await issuer_exchange.fetch_csr(self._manage_base(record), record.bootstrap_sha256)
                    authority = await self.authority()
                    cert = await asyncio.to_thread(authority.sign_issuer, csr, record.owner, record.runtime)
                    record = record.model_copy(
                        update={"issuer_pem": cert.decode(), "bootstrap_consumed": time.time()}
                    )
                    # Recorded, and the token marked consumed, before the certificate leaves.
                    await self.store.put(key, record.sealed(self.sealer))
                    log.info("metadata issuer signed", name=record.name)
                await issuer_exchange.push_certificate(
                    self._manage_base(record), record.bootstrap_sha256, record.issuer_cert_pem
                )
                return record
            except issuer_exchange.NotReady as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"metadata VM {record.name}: issuer bootstrap: {exc}") from None
                await asyncio.sleep(backoff.next())

    async def release(self, owner: str, runtime: str, remaining: list[Cluster]) -> bool:
        """Remove the metadata cluster serving ``owner`` on ``runtime`` if no cluster it serves is
        left, unless the runtime keeps its metadata clusters."""
        definition = await self._runtime(runtime)
        holder = _holder(definition, owner)
        log = get_logger("pitrix.metadata", owner=holder, runtime=runtime)
        if any(
            c.runtime == runtime and c.state != "deleted" and (holder == SHARED or c.owner == owner)
            for c in remaining
        ):
            return False
        if definition is not None and definition.metadata_retention == "keep":
            log.info("metadata cluster kept: the runtime's metadata_retention is keep")
            return False
        async with self.store.lock(f"metadata/{holder}/{runtime}", ttl=LOCK_TTL):
            record = await self._read(holder, runtime, definition)
            if record is None:
                return False
            provider = await self.provider_for(runtime)
            found = await self._vms(provider, record)
            if found:
                await provider.terminate_instances([i.instance_id for i in found])
            for cache in (record.manage_url, record.instance_id):
                client = self._clients.pop(cache, None)
                if client:
                    await client.close()
            tunnel = self._tunnels.pop(record.instance_id, None)
            if tunnel is not None:
                await tunnel.close()
            await self.store.delete(metadata_key(holder, runtime))
        log.info("metadata cluster removed")
        return True

    def client(self, record: MetadataCluster) -> MetadManagementClient:
        """The management client of ``record``'s metad: direct, or through its SSH tunnel if open."""
        tunnel = self._tunnels.get(record.instance_id)
        if tunnel is not None and tunnel.alive:
            cache = record.instance_id
            url = f"{record.scheme}://127.0.0.1:{tunnel.port}"
        else:
            cache, url = record.manage_url, record.manage_url
        client = self._clients.get(cache)
        if client is None:
            ssl = None
            if record.holds_issuer_key:  # a metadata cluster from before issuer bootstrap
                ssl = management_context(issuer_from_pem(record.issuer_pem))
            elif record.issuer_pem:
                if self._management is None:
                    raise RuntimeError("the management CA is not loaded (read the record with get/ensure)")
                ssl = management_client_context(record.issuer_cert_pem, self._management)
            if ssl is not None:
                ssl.check_hostname = tunnel is None  # through the tunnel: the chain still must verify
            client = self._clients[cache] = MetadManagementClient(url, ssl=ssl)
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
        for tunnel in self._tunnels.values():
            await tunnel.close()
        self._tunnels.clear()

    async def _healthy(self, record: MetadataCluster) -> bool:
        try:
            await self.client(record).healthz()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        return True

    @staticmethod
    async def _vms(provider: Provider, record: MetadataCluster) -> list[Instance]:
        """The metadata VM by its deterministic name, unless the cloud has already let it go."""
        return [
            i
            for i in await provider.describe_instances(name_prefix=record.name)
            if i.name == record.name and i.status not in ("terminated", "ceased")
        ]

    async def _patient(self, record: MetadataCluster, owner: str, runtime: str) -> bool:
        """True if a ready record's service answers, now or within :data:`READY_PATIENCE`.

        False only when it stays silent that long and its VM is gone or not running: then it is
        provisioned again (under the lock, looked up by name first).
        """
        if await self._healthy(record):
            return True
        log = get_logger("pitrix.metadata", owner=owner, runtime=runtime)
        log.warning("metadata service not answering; waiting for it", ip=record.ip)
        try:
            await self._wait_healthy(record, READY_PATIENCE)
            return True
        except TimeoutError:
            pass
        found = await self._vms(await self.provider_for(runtime), record)
        if found and found[0].status == "running":
            raise TimeoutError(
                f"metadata service at {record.manage_url} has not answered for {READY_PATIENCE:.0f}s "
                f"although its VM {found[0].instance_id} is running; see its /var/log/pitrix-metad.log"
            )
        log.warning("metadata VM gone; making it again", ip=record.ip, found=[i.status for i in found])
        return False

    async def _wait_healthy(self, record: MetadataCluster, timeout: float) -> None:
        """metad starts a moment after the VM runs: wait for it, with a deadline and backoff."""
        deadline = time.monotonic() + max(timeout, 1.0)
        backoff = Backoff(0.02, 0.5)
        while not await self._healthy(record):
            if time.monotonic() > deadline:
                raise TimeoutError(f"metadata service at {record.manage_url} did not become healthy")
            await asyncio.sleep(backoff.next())
