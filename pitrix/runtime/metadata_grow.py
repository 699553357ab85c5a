"""Growing a ready metadata cluster to its runtime's ``metadata_size`` (1 → 3, 3 → 5): a journaled
job of that cluster, one new member at a time.

    peer-tls → run-instance → wait-running → member-add → bootstrap-peer → wait-healthy

``peer-tls`` moves member 0's etcd, made as a single member with peer TLS from its own local CA,
to the runtime's etcd peers CA, its data kept (metad's ``/v1/etcd/peer-setup``: it restarts its
etcd as ``m0``); a cluster of several at birth, or a re-run, finds it done. The other five steps
are a replacement's (:class:`~pitrix.runtime.metadata_replace.MetadataReplace`), for the slot past
the last member and nothing lost. Members are added one at a time, each only once the one before
serves: etcd lets a single member add a second (the pair then needs both for a quorum, so the
new VM runs before it is added), and a pair add a third only once both are started.

What must survive a crash is in etcd before it is acted on: the next member's job (its slot,
VM name, later its token hash sealed) under :func:`metadata_members.growth_key`, the record's
``condition`` ("metadata cluster growing 1 → 3", what ``pitrix show`` prints) and ``job_id``.
The record names a member once it answers; the growth ends when the record has the size asked.
Under the lock every change of the metadata cluster takes: never beside its making or a
replacement. The metadata monitor starts it (and resumes one under way after a restart).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

from pitrix.metad.client import FailoverManagementClient, MetadManagementClient
from pitrix.runtime import metadata_members, metadata_replace
from pitrix.runtime.authority import etcd_peers_ca, management_client_context, sign_peer
from pitrix.runtime.executor import StepFailed, execute
from pitrix.runtime.metadata_replace import MetadataReplace, Replacement, retrying
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.records import MetadataCluster
from pitrix.store import Lock

if TYPE_CHECKING:
    from pitrix.runtime.metadata import MetadataClusters

# etcd restarts on its data (a large one replays for a while), then elects itself.
PEER_TLS_TIMEOUT = 180.0
GROWING = "metadata cluster growing"
FAILED = "; last attempt failed: "  # what follows the growth's condition while a step fails


class GrowthFailed(Exception):
    """A step of the growth failed for good (its reason); the next look resumes it."""


def growing(record: MetadataCluster, size: int) -> str:
    """What the record says while it grows: from the size it had when the growth began."""
    if record.condition.startswith(GROWING):
        return record.condition.split(FAILED)[0]
    return f"{GROWING} {1 + len(record.members)} → {size}"


class MetadataGrow(MetadataReplace):
    """The steps adding the next member of ``holder``'s metadata cluster on ``runtime``."""

    def __init__(self, clusters: MetadataClusters, holder: str, runtime: str) -> None:
        super().__init__(clusters, holder, runtime, metadata_members.growth_key(holder, runtime))

    def plan(self) -> Plan:
        return self.joining(Plan("metadata-grow").then(Step("peer-tls", self.peer_tls, PEER_TLS_TIMEOUT)))

    def condition_after(self, record: MetadataCluster, job: Replacement) -> str:
        """Still growing until the last member serves."""
        return growing(record, job.target) if 1 + len(record.members) < job.target else ""

    async def peer_tls(self) -> str:
        """Member 0's etcd on the peers' TLS as ``m0``, its data kept (done already: said so)."""
        record = await self._record()
        context = management_client_context(record.issuer_cert_pem, await self.clusters.management())
        deadline = time.monotonic() + PEER_TLS_TIMEOUT - 5.0
        # Long enough for metad to restart its etcd within one request.
        async with MetadManagementClient(record.manage_url, ssl=context, timeout=120.0) as client:
            state = await retrying(client.etcd_peer_setup, deadline, "peer set-up")
            if state.get("member"):
                return f"member 0 ({record.vm_name}) is etcd member {state['member']} already"
            peers = await etcd_peers_ca(self.store, self.clusters.sealer)
            csr = str(state.get("csr", "")).encode()
            cert = await asyncio.to_thread(sign_peer, peers, csr, record.ip, record.name)
            done = await retrying(
                lambda: client.etcd_peer_adopt("m0", peers.cert_pem, cert, record.name, record.name),
                deadline,
                "peer set-up",
            )
        self.log.warning("metadata member 0 moved to the peers' TLS", vm=record.vm_name, ip=record.ip)
        restarted = "its etcd restarted" if done.get("restarted") else "found done"
        return f"member 0 ({record.vm_name}) on the peers' TLS as m0; {restarted}"


async def load(clusters: MetadataClusters, holder: str, runtime: str) -> Replacement | None:
    """The next member's job of a growth under way, if any."""
    key = metadata_members.growth_key(holder, runtime)
    return await metadata_replace.load(clusters, holder, runtime, key)


async def added(clusters: MetadataClusters, record: MetadataCluster, job: Replacement) -> bool:
    """Whether the growth's next member is in etcd's list of members already (asked of the
    members, not of the job: a crash may fall between etcd's add and the job's write).

    Not yet: with a member lost etcd would not add it (or, added, it would count against a
    quorum already short), so the lost member is replaced first. Already: it counts against the
    quorum until it starts, and only its start gives the quorum back, so it is finished first."""
    if job.members:
        return True
    if not job.ip:
        return False  # no address yet: no peer URL to add
    context = management_client_context(record.issuer_cert_pem, await clusters.management())
    ips = [ip for ip in [record.ip, *(m.ip for m in record.members)] if ip]
    urls = [f"https://{ip}:9611" for ip in ips]
    async with FailoverManagementClient(urls, ssl=context, timeout=10.0) as client:
        listed = await client.etcd_members()
    return any(job.peer_url in member.get("peer_urls", []) for member in listed.get("members", []))


async def begin(clusters: MetadataClusters, holder: str, runtime: str, size: int) -> Replacement | None:
    """The member joining now, or the next one written down; None once the record has ``size``."""
    steps = MetadataGrow(clusters, holder, runtime)
    job = await load(clusters, holder, runtime)
    if job is not None:
        return job
    record = await steps._record()
    slot = 1 + len(record.members)
    if slot >= size or record.status != "ready":
        return None
    text = growing(record, size)
    job = Replacement(
        job_id=uuid.uuid4().hex[:12],
        slot=slot,
        reason=text,
        lost_instance_id="",
        lost_ip="",
        vm_name=f"{record.name}-m{slot}",
        started=time.time(),
        target=size,
    )
    # The record says it grows first: a crash before the job is written begins it again, saying
    # the same (``growing`` keeps the size it began from); then the job, before anything is done.
    await steps._save_record(record.model_copy(update={"job_id": job.job_id, "condition": text}))
    await steps._save(job)
    steps.log.warning(text, slot=slot, vm=job.vm_name, job_id=job.job_id)
    return job


async def grow(clusters: MetadataClusters, holder: str, runtime: str, size: int) -> MetadataCluster:
    """Grow the cluster to ``size`` members (or resume the growth under way), under the lock every
    change of this metadata cluster takes; the record as it ends."""
    from pitrix.runtime.metadata import LOCK_TTL, _while_held

    lock = Lock(clusters.store, f"metadata/{holder}/{runtime}", ttl=LOCK_TTL)
    await lock.acquire(timeout=metadata_replace.LOCK_WAIT)
    try:
        return await _while_held(lock, _grow(clusters, holder, runtime, size))
    finally:
        await lock.release()


async def _grow(clusters: MetadataClusters, holder: str, runtime: str, size: int) -> MetadataCluster:
    steps = MetadataGrow(clusters, holder, runtime)
    if await metadata_replace.load(clusters, holder, runtime) is not None:
        return await steps._record()  # a replacement first (the monitor resumes it)
    while (job := await begin(clusters, holder, runtime, size)) is not None:
        journal = metadata_replace.job_journal(clusters, holder, runtime, job.job_id)
        try:
            await execute(steps.plan(), journal, retry=clusters.retry)
        except StepFailed as exc:
            # Said on the record (pitrix show) until the member joins on a later attempt.
            said = f"{growing(await steps._record(), size)}{FAILED}{exc}"
            await metadata_replace.set_condition(clusters, holder, runtime, said)
            where = f"metadata cluster {holder}/{runtime}, growth {job.job_id} (member m{job.slot})"
            raise GrowthFailed(f"{where}: {exc}") from None
    return await steps._record()
