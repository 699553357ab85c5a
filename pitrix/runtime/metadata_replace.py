"""Replacing a lost member of a metadata cluster of several: a journaled job of that cluster.

    retire → run-instance → wait-running → member-add → bootstrap-peer → wait-healthy

The order is etcd's: the lost member is removed first (while two of three still form a quorum;
adding first would make four members of which one is dead and one not started), then the new
VM is made and, once the cloud gave it its address, that peer URL added; its metad holds its etcd
back until pitrixd hands it its peer certificate and the members' list (state ``existing``), and
takes the cluster's issuer from the cluster's etcd (``--issuer-from-cluster``), so member 0 may
be the one lost: any surviving member serves as first.

What must survive a crash is in etcd before it is acted on: the job (which slot, which VM was
lost, the new VM's name) is written under :func:`metadata_members.replacement_key` before the
first step, the new VM's token hash (sealed) before the VM exists. Each step looks before it
acts (the VM by its name, which carries a generation: ``<name>-m<k>-g<n>``; a member not listed
is removed already; a URL listed is added already; a metad that has its certificates answers
409), so a re-run after a crash anywhere finds its work done. The record names the new member
only once it answers, and the job's key goes with that last write.

The five steps after ``retire`` are also how a cluster grows (:mod:`pitrix.runtime.metadata_grow`):
a new member in the next slot, nothing lost (no ``lost_ip``), the record's members extended
rather than one replaced; its job is kept under a key of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import aiohttp
from pydantic import BaseModel, Field

from pitrix.backoff import Backoff
from pitrix.logs import get_logger
from pitrix.metad.client import FailoverManagementClient, MetadClientError, MetadManagementClient
from pitrix.providers.base import InstanceSpec, Provider
from pitrix.runtime import issuer_exchange, metadata_members
from pitrix.runtime.authority import etcd_peers_ca, management_client_context, sign_peer
from pitrix.runtime.booting import wait_booted
from pitrix.runtime.executor import StepFailed, execute
from pitrix.runtime.journal import Journal
from pitrix.runtime.keys import metadata_key, metadata_steps_prefix
from pitrix.runtime.metadata_plan import ISSUER_TOKEN_TTL, METADATA_IMAGE
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.records import MetadataCluster, MetadataMember
from pitrix.runtime.userdata import MetadMembership, MetadTrust, metad_userdata
from pitrix.sealing import Sealer
from pitrix.store import Lock, Op

if TYPE_CHECKING:
    from pitrix.runtime.metadata import MetadataClusters

T = TypeVar("T")

RETIRE_TIMEOUT = 90.0  # etcd refuses member changes for ~5 s after its members connect
RUN_INSTANCE_TIMEOUT = 120.0
WAIT_RUNNING_TIMEOUT = 180.0
MEMBER_ADD_TIMEOUT = 90.0
BOOTSTRAP_TIMEOUT = 120.0
WAIT_HEALTHY_TIMEOUT = 120.0  # the new member's etcd catches up with the others' data first
BOOT_TIMEOUT = 120.0
LOCK_WAIT = 600.0
STEPS = ("retire", "run-instance", "wait-running", "member-add", "bootstrap-peer", "wait-healthy")


class ReplacementFailed(Exception):
    """A step of the replacement failed for good (its reason); the next look resumes the job."""


class Replacement(BaseModel):
    """One new member joining under way (a replacement, or a growth's next member): written
    before its first step, gone with its last."""

    job_id: str
    slot: int  # 0: the record's own VM; k: record.members[k - 1] (k = len(members) + 1: a new one)
    reason: str
    lost_instance_id: str  # "" (and lost_ip ""): nothing lost, the cluster grows
    lost_ip: str
    vm_name: str  # the new VM's (a new generation of the slot's name)
    instance_id: str = ""
    ip: str = ""
    bootstrap_sha256: str = ""  # sealed in etcd
    bootstrap_expires: float = 0.0
    bootstrap_consumed: float = 0.0
    members: dict[str, str] = Field(default_factory=dict)  # what the new member joins with
    started: float = 0.0
    target: int = 0  # a growth: the size it grows to

    @property
    def etcd_name(self) -> str:
        return f"m{self.slot}"

    @property
    def lost_peer_url(self) -> str:
        return f"https://{self.lost_ip}:{metadata_members.PEER_PORT}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.ip}:{metadata_members.PEER_PORT}"

    def sealed(self, sealer: Sealer, holder: str, runtime: str, key: str = "") -> bytes:
        data = self.model_dump(mode="json")
        if self.bootstrap_sha256:
            context = _context(holder, runtime, key)
            data["bootstrap_sha256"] = sealer.seal_text(self.bootstrap_sha256, context)
        return json.dumps(data).encode()

    @classmethod
    def opened(cls, raw: bytes, sealer: Sealer, holder: str, runtime: str, key: str = "") -> Replacement:
        data = json.loads(raw)
        if isinstance(data.get("bootstrap_sha256"), str):
            context = _context(holder, runtime, key)
            data["bootstrap_sha256"] = sealer.open_text(data["bootstrap_sha256"], context)
        return cls.model_validate(data)


async def answers(url: str, context: ssl.SSLContext, timeout: float = 3.0) -> bool:
    """Whether the metad at ``url`` answers its management health check now."""
    async with MetadManagementClient(url, ssl=context, timeout=timeout) as client:
        try:
            await client.healthz()
        except (aiohttp.ClientError, OSError, TimeoutError, MetadClientError):
            return False
    return True


def _context(holder: str, runtime: str, key: str = "") -> str:
    """What a job's token hash is sealed for: its own key (a replacement's by default)."""
    return f"{key or metadata_members.replacement_key(holder, runtime)}/bootstrap_sha256"


def slot_vm(record: MetadataCluster, slot: int) -> tuple[str, str, str]:
    """The VM name, instance id and address of member ``slot``."""
    if slot == 0:
        return record.vm_name, record.instance_id, record.ip
    member = record.members[slot - 1]
    return member.name, member.instance_id, member.ip


def next_vm_name(record: MetadataCluster, slot: int) -> str:
    """The slot's next VM name: one generation past its current VM's (deterministic per job)."""
    base = f"{record.name}-m{slot}"
    current = slot_vm(record, slot)[0]
    found = re.fullmatch(re.escape(base) + r"-g(\d+)", current)
    return f"{base}-g{int(found.group(1)) + 1 if found else 1}"


async def load(clusters: MetadataClusters, holder: str, runtime: str, key: str = "") -> Replacement | None:
    """The job under way at ``key`` (a replacement's by default), if any."""
    kv = await clusters.store.get(key or metadata_members.replacement_key(holder, runtime))
    return Replacement.opened(kv.value, clusters.sealer, holder, runtime, key) if kv else None


async def retrying(call: Callable[[], Awaitable[T]], deadline: float, what: str) -> T:
    """``call`` again while etcd cannot change its members yet (503), up to ``deadline``."""
    backoff = Backoff(0.1, 1.0)
    while True:
        try:
            return await call()
        except MetadClientError as exc:
            if exc.status != 503 or time.monotonic() > deadline:
                raise
            reason = str(exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            reason = str(exc) or type(exc).__name__
        get_logger("pitrix.metadata").info("metadata membership: asking again", what=what, reason=reason)
        await asyncio.sleep(backoff.next())


class MetadataReplace:
    """The steps replacing one member of ``holder``'s metadata cluster on ``runtime``."""

    def __init__(self, clusters: MetadataClusters, holder: str, runtime: str, key: str = "") -> None:
        self.clusters = clusters
        self.store = clusters.store
        self.holder = holder
        self.runtime = runtime
        self.key = key or metadata_members.replacement_key(holder, runtime)
        self.log = get_logger("pitrix.metadata", owner=holder, runtime=runtime)

    def plan(self) -> Plan:
        return self.joining(Plan("metadata-replace").then(Step("retire", self.retire, RETIRE_TIMEOUT)))

    def joining(self, plan: Plan) -> Plan:
        """``plan`` followed by the steps that make a new member and have it join."""
        return (
            plan.then(Step("run-instance", self.run_instance, RUN_INSTANCE_TIMEOUT))
            .then(Step("wait-running", self.wait_running, WAIT_RUNNING_TIMEOUT))
            .then(Step("member-add", self.member_add, MEMBER_ADD_TIMEOUT))
            .then(Step("bootstrap-peer", self.bootstrap_peer, BOOTSTRAP_TIMEOUT))
            .then(Step("wait-healthy", self.wait_healthy, WAIT_HEALTHY_TIMEOUT))
        )

    def condition_after(self, record: MetadataCluster, job: Replacement) -> str:
        """What the record says once the new member serves: nothing wrong any more."""
        return ""

    # -- state -------------------------------------------------------------------------------------

    async def _record(self) -> MetadataCluster:
        kv = await self.store.get(metadata_key(self.holder, self.runtime))
        if kv is None:
            raise RuntimeError(f"metadata cluster {self.holder}/{self.runtime}: its record is gone")
        return MetadataCluster.opened(kv.value, self.clusters.sealer)

    async def _save_record(self, record: MetadataCluster) -> None:
        await self.store.put(metadata_key(self.holder, self.runtime), record.sealed(self.clusters.sealer))

    async def _job(self) -> Replacement:
        job = await load(self.clusters, self.holder, self.runtime, self.key)
        if job is None:
            raise RuntimeError(f"metadata cluster {self.holder}/{self.runtime}: no new member under way")
        return job

    async def _save(self, job: Replacement) -> None:
        await self.store.put(self.key, job.sealed(self.clusters.sealer, self.holder, self.runtime, self.key))

    async def _provider(self) -> Provider:
        return await self.clusters.provider_for(self.runtime)

    async def _survivors(self, record: MetadataCluster, job: Replacement) -> FailoverManagementClient:
        """A management client over the members other than the lost one (all of them: a growth)."""
        context = management_client_context(record.issuer_cert_pem, await self.clusters.management())
        ips = [ip for ip in [record.ip, *(m.ip for m in record.members)] if ip and ip != job.lost_ip]
        return FailoverManagementClient([f"https://{ip}:9611" for ip in ips], ssl=context, timeout=10.0)

    # -- steps -------------------------------------------------------------------------------------

    async def retire(self) -> str:
        """The lost VM terminated (it must not come back with a removed member's etcd), then its
        etcd member removed through a surviving metad."""
        record, job = await self._record(), await self._job()
        provider = await self._provider()
        detail = ""
        if job.lost_instance_id:
            found = await provider.describe_instances(instance_ids=[job.lost_instance_id])
            alive = [i.instance_id for i in found if i.status not in metadata_members.GONE]
            if alive:
                await provider.terminate_instances(alive)
                detail = f"terminated {job.lost_instance_id}; "
        deadline = time.monotonic() + RETIRE_TIMEOUT - 5.0
        async with await self._survivors(record, job) as client:
            removed = await retrying(
                lambda: client.etcd_member_remove(peer_url=job.lost_peer_url), deadline, "member remove"
            )
        self.log.warning("metadata member removed", slot=job.slot, lost=job.lost_instance_id, ip=job.lost_ip)
        return detail + (
            f"member {job.etcd_name} removed" if removed else f"member {job.etcd_name} not listed"
        )

    async def run_instance(self) -> str:
        """The new VM by its name, or made: its token's hash recorded before the cloud is asked."""
        record, job = await self._record(), await self._job()
        provider = await self._provider()
        found = [
            i
            for i in await provider.describe_instances(name_prefix=record.name)
            if i.name == job.vm_name and i.status not in metadata_members.GONE
        ]
        if found and not job.bootstrap_consumed and issuer_exchange.expired(job.bootstrap_expires):
            self.log.warning("replacement VM missed its bootstrap; making it again", name=job.vm_name)
            await provider.terminate_instances([i.instance_id for i in found])
            found = []
        if found:
            job = job.model_copy(update={"instance_id": found[0].instance_id})
            await self._save(job)
            return f"found {job.instance_id} ({job.vm_name})"
        token = secrets.token_urlsafe(32)
        job = job.model_copy(
            update={
                "instance_id": "",
                "ip": "",
                "members": {},
                "bootstrap_sha256": hashlib.sha256(token.encode()).hexdigest(),
                "bootstrap_expires": time.time() + ISSUER_TOKEN_TTL,
                "bootstrap_consumed": 0.0,
            }
        )
        await self._save(job)  # the token's hash before any VM holds the token
        authority = await self.clusters.authority()
        trust = MetadTrust(authority.ca_pem(), (await self.clusters.management()).cert_pem, token)
        peers = await etcd_peers_ca(self.store, self.clusters.sealer)
        member = MetadMembership(job.etcd_name, peers.cert_pem, record.name, joins=True)
        spec = InstanceSpec(
            name=job.vm_name,
            image=METADATA_IMAGE,
            userdata=metad_userdata(trust, member=member),
            tags={"pitrix:owner": self.holder, "pitrix:role": "metadata"},
            spread_group=record.name,
            spread_index=job.slot,
        )
        instance = (await provider.run_instances([spec]))[0]
        job = job.model_copy(update={"instance_id": instance.instance_id})
        await self._save(job)
        return f"made {instance.instance_id} ({job.vm_name})"

    async def wait_running(self) -> str:
        job = await self._job()
        (instance,) = await wait_booted(await self._provider(), [job.instance_id], BOOT_TIMEOUT)
        job = job.model_copy(update={"ip": instance.private_ip})
        await self._save(job)
        return f"{instance.instance_id} running at {instance.private_ip}"

    async def member_add(self) -> str:
        """The new VM's peer URL added (an added member that never started, from an earlier VM
        of this job, removed first: it would count against the quorum)."""
        record, job = await self._record(), await self._job()
        deadline = time.monotonic() + MEMBER_ADD_TIMEOUT - 5.0
        async with await self._survivors(record, job) as client:
            listed = await retrying(client.etcd_members, deadline, "member list")
            for member in listed.get("members", []):
                urls = member.get("peer_urls", [])
                if not member.get("started") and job.peer_url not in urls and urls:
                    stale = partial(client.etcd_member_remove, peer_url=urls[0])
                    await retrying(stale, deadline, "member remove")
            members = await retrying(
                lambda: client.etcd_member_add(job.etcd_name, job.peer_url), deadline, "member add"
            )
        job = job.model_copy(update={"members": members})
        await self._save(job)
        return f"member {job.etcd_name} added at {job.peer_url}; {len(members)} members"

    async def bootstrap_peer(self) -> str:
        """The new member's peer certificate and the members' list handed over (state existing)."""
        record, job = await self._record(), await self._job()
        if job.bootstrap_consumed:
            return "handed over already"
        deadline = time.monotonic() + BOOTSTRAP_TIMEOUT - 5.0
        base = f"https://{job.ip}:9611"
        context = management_client_context(record.issuer_cert_pem, await self.clusters.management())
        backoff = Backoff(0.05, 0.5)
        watch = self.clusters.vm_watch(
            record, job.vm_name, f"new metadata member {job.vm_name}: peer bootstrap"
        )
        while True:
            if await answers(base, context):
                break  # it has its certificates and serves: an earlier push arrived
            try:
                offer = await issuer_exchange.fetch_offer(base, job.bootstrap_sha256)
            except issuer_exchange.NotReady as exc:
                if "HTTP 409" in str(exc):
                    break  # it has its certificates, its etcd joining
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replacement member {job.vm_name}: bootstrap: {exc}") from None
                await watch.still_running(exc)
                await asyncio.sleep(backoff.next())
                continue
            peers = await etcd_peers_ca(self.store, self.clusters.sealer)
            peer = await asyncio.to_thread(sign_peer, peers, offer.peer_csr, job.ip, record.name)
            await metadata_members.push_to(
                base, job.bootstrap_sha256, b"", peer, job.members, deadline, state="existing", watch=watch
            )
            break
        job = job.model_copy(update={"bootstrap_consumed": time.time()})
        await self._save(job)
        return f"peer certificate and {len(job.members)} members handed to {job.vm_name}"

    async def wait_healthy(self) -> str:
        """The new metad answering (it serves once its etcd joined), then the record names it."""
        record, job = await self._record(), await self._job()
        context = management_client_context(record.issuer_cert_pem, await self.clusters.management())
        deadline = time.monotonic() + WAIT_HEALTHY_TIMEOUT - 5.0
        backoff = Backoff(0.05, 0.5)
        what = f"new metadata member {job.vm_name} at {job.ip}: waiting for its metad"
        watch = self.clusters.vm_watch(record, job.vm_name, what)
        async with MetadManagementClient(f"https://{job.ip}:9611", ssl=context, timeout=5.0) as client:
            while True:
                try:
                    await client.healthz()
                    break
                except (aiohttp.ClientError, OSError, TimeoutError, MetadClientError) as exc:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"replacement member {job.vm_name} at {job.ip} did not answer"
                        ) from None
                    await watch.still_running(str(exc) or type(exc).__name__)
                    await asyncio.sleep(backoff.next())
        old = record
        if job.slot == 0:
            moved = {"instance_id": job.instance_id, "ip": job.ip, "vm": job.vm_name}
            record = record.model_copy(update=moved)
        else:
            members = list(record.members)
            member = MetadataMember(name=job.vm_name, instance_id=job.instance_id, ip=job.ip)
            if job.slot - 1 < len(members):
                members[job.slot - 1] = member
            else:  # a growth: a slot past the last
                members.append(member)
            record = record.model_copy(update={"members": members})
        record = record.model_copy(update={"condition": self.condition_after(record, job)})
        # One write: the record names the member and the job ends together (a reader never sees
        # the member recorded with its job still under way, nor a crash leave that).
        named = Op("put", metadata_key(self.holder, self.runtime), record.sealed(self.clusters.sealer))
        await self.store.txn([], [named, Op("delete", self.key)])
        self.clusters.follow_members(old, record)
        what = "metadata member replaced" if job.lost_ip or job.lost_instance_id else "metadata member added"
        self.log.warning(what, slot=job.slot, vm=job.vm_name, ip=job.ip)
        return f"{job.vm_name} serves as member {job.etcd_name} at {job.ip}"


async def replace(
    clusters: MetadataClusters, holder: str, runtime: str, slot: int = -1, reason: str = ""
) -> MetadataCluster:
    """Replace member ``slot`` (or resume the replacement under way, ``slot`` -1), under the lock
    every change of this metadata cluster takes; the record as it ends."""
    from pitrix.runtime.metadata import LOCK_TTL, _while_held

    lock = Lock(clusters.store, f"metadata/{holder}/{runtime}", ttl=LOCK_TTL)
    await lock.acquire(timeout=LOCK_WAIT)
    try:
        return await _while_held(lock, _replace(clusters, holder, runtime, slot, reason))
    finally:
        await lock.release()


async def begin(
    clusters: MetadataClusters, holder: str, runtime: str, slot: int, reason: str
) -> Replacement | None:
    """The replacement under way, or one of member ``slot`` written down (``slot`` -1: none)."""
    job = await load(clusters, holder, runtime)
    if job is not None or slot < 0:
        return job
    steps = MetadataReplace(clusters, holder, runtime)
    record = await steps._record()
    name, instance_id, ip = slot_vm(record, slot)
    job = Replacement(
        job_id=uuid.uuid4().hex[:12],
        slot=slot,
        reason=reason,
        lost_instance_id=instance_id,
        lost_ip=ip,
        vm_name=next_vm_name(record, slot),
        started=time.time(),
    )
    await steps._save(job)  # the job, before anything is acted on
    record = record.model_copy(
        update={"job_id": job.job_id, "condition": f"replacing member {name}: {reason}"}
    )
    await steps._save_record(record)
    steps.log.warning("replacing a metadata member", slot=slot, vm=name, reason=reason, job_id=job.job_id)
    return job


def job_journal(clusters: MetadataClusters, holder: str, runtime: str, job_id: str) -> Journal:
    """The journal of one job of a metadata cluster (a replacement, a growth): its steps under the
    cluster's steps prefix, so a restarted pitrixd resumes them where they stopped."""
    return Journal(
        clusters.store,
        f"metadata:{holder}/{runtime}",
        job_id,
        prefix=metadata_steps_prefix(holder, runtime, job_id),
    )


async def _replace(
    clusters: MetadataClusters, holder: str, runtime: str, slot: int, reason: str
) -> MetadataCluster:
    steps = MetadataReplace(clusters, holder, runtime)
    job = await begin(clusters, holder, runtime, slot, reason)
    if job is None:
        return await steps._record()  # finished meanwhile
    journal = job_journal(clusters, holder, runtime, job.job_id)
    try:
        await execute(steps.plan(), journal, retry=clusters.retry)
    except StepFailed as exc:
        where = f"metadata cluster {holder}/{runtime}, replacement {job.job_id}"
        raise ReplacementFailed(f"{where}: {exc}") from None
    return await steps._record()


async def set_condition(clusters: MetadataClusters, holder: str, runtime: str, text: str) -> None:
    """Say on the record what is wrong with the members (``""``: nothing), unless it changed
    meanwhile (the next look says it again)."""
    key = metadata_key(holder, runtime)
    kv = await clusters.store.get(key)
    if kv is None:
        return
    record = MetadataCluster.opened(kv.value, clusters.sealer)
    if record.condition == text:
        return
    record = record.model_copy(update={"condition": text})
    await clusters.store.compare_and_swap(key, kv.mod_revision, record.sealed(clusters.sealer))
