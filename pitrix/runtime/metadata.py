"""Metadata clusters: one etcd + pitrix-metad per owner × runtime, made on first use.

Or one per runtime for all its owners, where the runtime's ``placement`` is ``per-runtime``; the
``holder`` of a metadata cluster is then :data:`SHARED` instead of an owner. Removed when its last
cluster is deleted, unless the runtime's ``metadata_retention`` is ``keep``.

Made by a plan like a cluster's (:mod:`pitrix.runtime.metadata_plan`: plan-vm, run-instance,
wait-running, bootstrap-issuer, wait-healthy), journaled under the metadata cluster's own key and
run by the same executor, so a pitrixd killed mid-way resumes at the first unfinished step; the
record names the job (``job_id``). A plan that failed is not resumed: the next ``ensure`` starts a
new job, whose steps find what the last one made by the VM's deterministic name.

One ensure at a time per holder × runtime, under an etcd lock: two clusters created together
share one metadata cluster, and a waiter whose runner died (its pitrixd killed) takes over, with
the journal. The lock is the right tool rather than a create-if-absent job key: a waiter must both
wait for the runner and outlive it, which is exactly a queue of leased keys. Every wait has a
deadline: the lock's (``LockTimeout``, naming the holder), each step's, and the lock lost while
running the plan stops it (steps are idempotent: like a crash, it resumes).

A ready metadata cluster that does not answer its health check at once is waited for, not
rebuilt: under load, or while its VM restarts, a missed health check says nothing about the VM.
Only a VM the cloud no longer has is made again.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp

from pitrix import pki
from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.metad import keyspace
from pitrix.metad.client import FailoverManagementClient, MetadClientError, MetadManagementClient
from pitrix.providers.base import Instance, Provider
from pitrix.providers.errors import ProviderError
from pitrix.runtime import issuer_exchange, metadata_members
from pitrix.runtime.authority import Authority, issuer_from_pem, management_client_context, management_context
from pitrix.runtime.executor import DEFAULT_RETRY, StepFailed, execute
from pitrix.runtime.journal import Journal
from pitrix.runtime.keypairs import KeyPairs
from pitrix.runtime.keys import metadata_key, metadata_steps_prefix, runtime_key
from pitrix.runtime.metadata_plan import (
    ISSUER_TOKEN_TTL,
    METADATA_IMAGE,
    PLAN_BUDGET,
    MetadataBuild,
    Stranded,
    stranded,
)
from pitrix.runtime.records import Cluster, MetadataCluster, Runtime, StepRecord
from pitrix.runtime.retrying import RetryPolicy
from pitrix.runtime.tunnel import Tunnel, open_tunnel
from pitrix.runtime.vm_watch import HALTED, VmWatch
from pitrix.sealing import Sealer
from pitrix.store import Lock, Store, StoreError
from pitrix.store.lock import QueuedLeaseLost

__all__ = [
    "ISSUER_TOKEN_TTL",
    "METADATA_IMAGE",
    "SHARED",
    "MetadataClusters",
    "MetadataUnavailable",
    "metadata_name",
]

# A crashed pitrixd holds this lock until its lease runs out: keep the wait after a restart short.
LOCK_TTL = 5
# How long an ensure waits for another one (making the same metadata cluster) before it gives up
# with the holder's name: the other's plan, and a look at the record, fit in it; the supervisor's
# step (600 s) does not run out first.
LOCK_WAIT = PLAN_BUDGET + 30.0
# Times an ensure queues again after its lock slipped away (lease expired under load) mid-plan.
LOCK_ATTEMPTS = 3
# How long a ready metadata cluster may miss health checks before its VM is looked at again.
READY_PATIENCE = 60.0


class LockLost(StoreError):
    """The ensure's lock slipped away while its plan ran: the plan was stopped (it resumes)."""


class MetadataUnavailable(Exception):
    """The metadata cluster could not be made ready: which step failed and why.

    Not a cloud error the caller's step retries: the plan's steps retried those already.
    """


class StatusUnavailable(Exception):
    """What a cluster's agents reported cannot be read now; the message says why."""


# How long a read of the agents' reports may take (an API view waits for it).
STATUS_TIMEOUT = 5.0
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
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.store = store
        self.retry = retry  # for the metadata plan's steps, as for a cluster's
        self.sealer = sealer
        self.provider_for = provider_for
        self.keypairs = keypairs or KeyPairs(store, sealer)  # the service's own, shared with the job steps
        self.tls = tls  # False: new metadata clusters speak plain HTTP with source-IP identity
        self._clients: dict[str, MetadManagementClient] = {}
        self._retired: list[MetadManagementClient] = []  # replaced in the cache, maybe still held
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
        """The metadata cluster serving ``owner``'s clusters on ``runtime``, created and healthy.

        ``timeout`` bounds one boot attempt of its VM; the plan's steps have deadlines of their own.
        """
        definition = await self._runtime(runtime)
        holder = _holder(definition, owner)
        current = await self._read(holder, runtime, definition)
        if current and current.status == "ready" and await self._patient(current, holder, runtime):
            return current
        deadline = time.monotonic() + LOCK_WAIT
        slipped = 0
        while True:
            lock = Lock(self.store, f"metadata/{holder}/{runtime}", ttl=LOCK_TTL)
            try:
                await lock.acquire(timeout=max(deadline - time.monotonic(), 1.0))
                return await _while_held(lock, self._make(holder, runtime, timeout, definition))
            except QueuedLeaseLost as exc:
                # Its place in the queue is gone, nothing was done: queue again (until the deadline;
                # many creates of one owner wait here at once, each on a lease of its own).
                if time.monotonic() >= deadline:
                    raise
                get_logger("pitrix.metadata", owner=holder, runtime=runtime).warning(str(exc))
            except LockLost as exc:
                slipped += 1
                if slipped == LOCK_ATTEMPTS:
                    raise
                # Stopped like a crash: queue again and resume from the journal.
                get_logger("pitrix.metadata", owner=holder, runtime=runtime).warning(str(exc))
            finally:
                await lock.release()

    async def _make(
        self, holder: str, runtime: str, timeout: float, definition: Runtime | None
    ) -> MetadataCluster:
        """Under the lock: the ready record, or the plan run (resumed, or a new job) to make it."""
        key = metadata_key(holder, runtime)
        record = await self._read(holder, runtime, definition)
        if record is not None and record.status == "ready" and await self._patient(record, holder, runtime):
            return record
        if record is None:
            record = MetadataCluster(owner=holder, runtime=runtime, name=metadata_name(holder, runtime))
        resume = record.status == "creating" and record.job_id and not stranded(record)
        if resume and await self._failed(holder, runtime, record.job_id):
            resume = False
        if not resume:
            # A new job: the last one's journal goes (it failed, or made what is gone now).
            await self.store.delete_prefix(metadata_steps_prefix(holder, runtime))
            record = record.model_copy(update={"status": "creating", "job_id": uuid.uuid4().hex[:12]})
            await self.store.put(key, record.sealed(self.sealer))
        journal = Journal(
            self.store,
            f"metadata:{holder}/{runtime}",
            record.job_id,
            prefix=metadata_steps_prefix(holder, runtime, record.job_id),
        )
        build = MetadataBuild(self, holder, runtime, definition, timeout)
        failure = ""
        try:
            await execute(build.plan(), journal, retry=self.retry)
        except StepFailed as exc:
            # Raised outside this handler: the caller's retry policy must not find the cloud error
            # behind it and run the whole plan again (retries would nest).
            failure = str(exc)
            if isinstance(exc.__cause__, Stranded):
                failure += " (the next ensure makes a new VM)"
        if failure:
            raise MetadataUnavailable(f"metadata cluster {holder}/{runtime}, job {record.job_id}: {failure}")
        made = await self._read(holder, runtime, definition)
        if made is None or made.status != "ready":
            raise MetadataUnavailable(
                f"metadata cluster {holder}/{runtime}: its plan ended but it is not ready"
            )
        return made

    async def _failed(self, holder: str, runtime: str, job_id: str) -> bool:
        """Whether ``job_id``'s plan ended with a failed step (then it is not resumed)."""
        prefix = metadata_steps_prefix(holder, runtime, job_id)
        records = await Journal(self.store, holder, job_id, prefix=prefix).records()
        return any(step.status == "failed" for step in records.values())

    async def steps(self, owner: str, runtime: str) -> dict[str, StepRecord]:
        """The journal of the job making (or last having made) ``owner``'s metadata cluster."""
        definition = await self._runtime(runtime)
        holder = _holder(definition, owner)
        record = await self._read(holder, runtime, definition)
        if record is None or not record.job_id:
            return {}
        prefix = metadata_steps_prefix(holder, runtime, record.job_id)
        return await Journal(self.store, holder, record.job_id, prefix=prefix).records()

    @staticmethod
    def via_ssh(definition: Runtime | None) -> bool:
        return _via_ssh(definition)

    async def reach(self, record: MetadataCluster, definition: Runtime | None) -> None:
        await self._reach(record, definition)

    async def vms(self, provider: Provider, record: MetadataCluster) -> list[Instance]:
        return await self._vms(provider, record)

    async def wait_healthy(self, record: MetadataCluster, timeout: float) -> None:
        await self._wait_healthy(record, timeout)

    def _manage_base(self, record: MetadataCluster) -> str:
        tunnel = self._tunnels.get(record.instance_id)
        if tunnel is not None and tunnel.alive:
            return f"https://127.0.0.1:{tunnel.port}"
        return record.manage_url

    async def bootstrap_issuer(self, record: MetadataCluster, deadline: float) -> MetadataCluster:
        """Sign the issuer the VM's metad made and hand it over; resumes wherever a crash left it."""
        await self.management()  # what the health checks below present
        log = get_logger("pitrix.metadata", owner=record.owner, runtime=record.runtime)
        key = metadata_key(record.owner, record.runtime)
        backoff = Backoff(0.02, 0.2)  # a CSR fetch is one small request: ask often
        watch = self.vm_watch(record, record.vm_name, f"metadata VM {record.name}: issuer bootstrap")
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
                await watch.still_running(exc)
                await asyncio.sleep(backoff.next())

    def vm_watch(self, record: MetadataCluster, vm_name: str, what: str) -> VmWatch:
        """A look at the cluster's member VM ``vm_name`` for a step waiting on its metad."""
        return VmWatch(lambda: self._halted(record, vm_name), what)

    async def _halted(self, record: MetadataCluster, vm_name: str) -> str:
        """Why the cluster's VM ``vm_name`` can no longer answer (gone, stopped), or "": a cloud that
        does not answer this time is no such reason (looked at again later)."""
        try:
            found = await self._vms(await self.provider_for(record.runtime), record, vm_name)
        except ProviderError:
            return ""
        if not found:
            return f"its VM {vm_name} is gone"
        if found[0].status in HALTED:
            return f"its VM {found[0].instance_id} is {found[0].status}"
        return ""

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
        lock = Lock(self.store, f"metadata/{holder}/{runtime}", ttl=LOCK_TTL)
        await lock.acquire(timeout=LOCK_WAIT)
        try:
            record = await self._read(holder, runtime, definition)
            if record is None:
                return False
            provider = await self.provider_for(runtime)
            names = {record.vm_name, *(m.name for m in record.members)}
            # A member still joining (a replacement's or a growth's) is not in the record yet.
            jobs = [
                metadata_members.replacement_key(holder, runtime),
                metadata_members.growth_key(holder, runtime),
            ]
            for key in jobs:
                kv = await self.store.get(key)
                joining = json.loads(kv.value).get("vm_name") if kv is not None else None
                if isinstance(joining, str) and joining:
                    names.add(joining)
            found = [
                i
                for i in await provider.describe_instances(name_prefix=record.name)
                if i.name in names and i.status not in ("terminated", "ceased")
            ]
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
            await self.store.delete_prefix(metadata_steps_prefix(holder, runtime))
            for key in jobs:
                await self.store.delete(key)
        finally:
            await lock.release()
        log.info("metadata cluster removed")
        return True

    async def status(self, owner: str, runtime: str, cid: str) -> dict[str, Any]:
        """metad's ``/_pitrix/status/<cid>`` tree (instance id -> what its agent last reported,
        as stored: JSON text), or ``StatusUnavailable`` saying why it cannot be read now."""
        record = await self.get(owner, runtime)
        if record is None or record.status != "ready" or not record.ip:
            raise StatusUnavailable("the cluster has no running metadata service")
        try:
            async with asyncio.timeout(STATUS_TIMEOUT):
                tree = await self.client(record).get_data(keyspace.cluster_status(cid))
        except (aiohttp.ClientError, OSError, TimeoutError, MetadClientError) as exc:
            reason = str(exc) or type(exc).__name__
            raise StatusUnavailable(
                f"the metadata service at {record.ip} cannot be asked ({reason})"
            ) from None
        return tree if isinstance(tree, dict) else {}

    def client(self, record: MetadataCluster) -> MetadManagementClient:
        """The management client of ``record``'s metad: direct, or through its SSH tunnel if open."""
        tunnel = self._tunnels.get(record.instance_id)
        if tunnel is not None and tunnel.alive:
            cache = record.instance_id
            url = f"{record.scheme}://127.0.0.1:{tunnel.port}"
        else:
            cache, url = record.manage_url, record.manage_url
        client = self._clients.get(cache)
        if client is not None and record.members and tunnel is None:
            # The record's members as they are now, whoever changed them (this replica or another:
            # a cluster grown or a member replaced elsewhere keeps member 0's address).
            urls = [url, *(f"{record.scheme}://{m.ip}:9611" for m in record.members if m.ip)]
            if not isinstance(client, FailoverManagementClient):
                self._retired.append(self._clients.pop(cache))  # whoever holds it keeps it
                client = None
            elif client.base_urls != urls:
                client.base_urls = urls
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
            if record.members and tunnel is None:  # a cluster of several: any member will do
                others = [f"{record.scheme}://{m.ip}:9611" for m in record.members if m.ip]
                client = FailoverManagementClient([url, *others], ssl=ssl)
            else:
                client = MetadManagementClient(url, ssl=ssl)
            self._clients[cache] = client
        return client

    def follow_members(self, old: MetadataCluster, new: MetadataCluster) -> None:
        """After a member was replaced: the cached management clients of ``old`` fail over
        between ``new``'s members (whoever holds one keeps it), also under ``new``'s address."""
        client = self._clients.get(old.manage_url)
        if isinstance(client, FailoverManagementClient) and not self._tunnels:
            urls = [new.manage_url, *(f"{new.scheme}://{m.ip}:9611" for m in new.members if m.ip)]
            client.base_urls = urls
            self._clients.setdefault(new.manage_url, client)
        elif client is not None and new.members and not self._tunnels:
            # A cluster of one that grew: the next client() fails over between its members. Whoever
            # holds the single member's client keeps it (closed with the others).
            self._retired.append(self._clients.pop(old.manage_url))

    def holder(self, definition: Runtime | None, owner: str) -> str:
        """Whose metadata cluster serves ``owner`` on a runtime defined as ``definition``."""
        return _holder(definition, owner)

    async def runtime(self, name: str) -> Runtime | None:
        return await self._runtime(name)

    async def record(self, holder: str, runtime: str) -> MetadataCluster | None:
        """The record of ``holder``'s metadata cluster on ``runtime`` as stored (nothing opened)."""
        kv = await self.store.get(metadata_key(holder, runtime))
        if kv is None:
            return None
        record = MetadataCluster.opened(kv.value, self.sealer)
        if record.issuer_pem and not record.holds_issuer_key:
            await self.management()
        return record

    async def close(self) -> None:
        for client in [*self._clients.values(), *self._retired]:
            await client.close()
        self._clients.clear()
        self._retired.clear()
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
    async def _vms(provider: Provider, record: MetadataCluster, vm_name: str = "") -> list[Instance]:
        """The metadata VM (member 0's, or the member ``vm_name``) by its deterministic name, unless
        the cloud has already let it go."""
        name = vm_name or record.vm_name
        return [
            i
            for i in await provider.describe_instances(name_prefix=record.name)
            if i.name == name and i.status not in ("terminated", "ceased")
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


async def _while_held(lock: Lock, work: Coroutine[Any, Any, MetadataCluster]) -> MetadataCluster:
    """``work``, stopped if the lock slips away meanwhile: another ensure may hold it then, and the
    plan's steps are idempotent, so stopping is like a crash (the journal resumes it)."""
    task = asyncio.ensure_future(work)
    lost = asyncio.ensure_future(lock.lost.wait())
    try:
        await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, lost):
            pending.cancel()
        await asyncio.wait({task, lost})
    if task.cancelled():
        raise LockLost(f"lock {lock.name}: lost (lease expired) while making the metadata cluster")
    return task.result()
