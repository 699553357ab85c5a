"""The members of a metadata cluster of several (a runtime's ``metadata_size`` above one).

Member 0 is the record's own VM (the name a cluster of one has, so the record reads the same);
members 1..N-1 are ``<name>-m<k>``, kept in ``MetadataCluster.members``. Each boots a metad with
its own one-time token and ``--etcd-member m<k>``; once every member runs, pitrixd hands each its
peer certificate (from the etcd peers CA, CN = the cluster's name) and the members' list, and
member 0 also its issuer certificate; the others take that issuer from the cluster's etcd.

Every function looks before it acts (VMs by name, a metad that already has its certificates
answers 409), so a step re-run after a crash finds its own work done.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp

from pitrix.backoff import Backoff
from pitrix.metad.client import MetadManagementClient
from pitrix.providers.base import Instance, InstanceSpec, Provider
from pitrix.runtime import issuer_exchange
from pitrix.runtime.authority import etcd_peers_ca, management_client_context, sign_peer
from pitrix.runtime.keys import METADATA_DATA
from pitrix.runtime.records import MetadataCluster, MetadataMember
from pitrix.runtime.userdata import MetadMembership, MetadTrust, metad_userdata
from pitrix.runtime.vm_watch import VmWatch

if TYPE_CHECKING:
    from pitrix.runtime.metadata import MetadataClusters

PEER_PORT = 2380  # pitrix-metad's default --etcd-peer-port
GONE = ("terminated", "ceased")


def replacement_key(holder: str, runtime: str) -> str:
    """Where a replacement of one of the cluster's members is kept while it runs
    (:mod:`pitrix.runtime.metadata_replace`)."""
    return f"{METADATA_DATA}{holder}/{runtime}/replacement"


def growth_key(holder: str, runtime: str) -> str:
    """Where the next member of a growing cluster is kept while it joins
    (:mod:`pitrix.runtime.metadata_grow`)."""
    return f"{METADATA_DATA}{holder}/{runtime}/growth"


def member_names(record: MetadataCluster, size: int) -> list[str]:
    """Members 1..size-1's VM names (member 0 is the record's own)."""
    return [f"{record.name}-m{k}" for k in range(1, size)]


def peer_urls(record: MetadataCluster) -> dict[str, str]:
    """The members' list every member's etcd starts from: ``m<k>`` → its peer URL."""
    urls = {"m0": f"https://{record.ip}:{PEER_PORT}"}
    urls.update({f"m{k}": f"https://{m.ip}:{PEER_PORT}" for k, m in enumerate(record.members, start=1)})
    return urls


async def membership(clusters: MetadataClusters, record: MetadataCluster, index: int) -> MetadMembership:
    peers = await etcd_peers_ca(clusters.store, clusters.sealer)
    return MetadMembership(f"m{index}", peers.cert_pem, record.name, joins=index > 0)


async def run_members(
    clusters: MetadataClusters,
    provider: Provider,
    record: MetadataCluster,
    size: int,
    image: str,
    tags: dict[str, str],
    token_ttl: float,
    save: Callable[[MetadataCluster], Awaitable[None]],
) -> MetadataCluster:
    """Members 1..size-1 found by name, or made: each one's token hash recorded before its VM."""
    names = member_names(record, size)
    found = {
        i.name: i
        for i in await provider.describe_instances(name_prefix=record.name)
        if i.name in names and i.status not in GONE
    }
    known = {m.name: m for m in record.members}
    members: list[MetadataMember] = []
    for index, name in enumerate(names, start=1):
        member = known.get(name) or MetadataMember(name=name)
        if name in found:
            member = member.model_copy(update={"instance_id": found[name].instance_id})
        else:
            token = secrets.token_urlsafe(32)
            member = MetadataMember(
                name=name,
                bootstrap_sha256=hashlib.sha256(token.encode()).hexdigest(),
                bootstrap_expires=time.time() + token_ttl,
            )
            record = record.model_copy(update={"members": [*members, member, *record.members[index:]]})
            await save(record)  # the token's hash before any VM holds the token
            authority = await clusters.authority()
            trust = MetadTrust(authority.ca_pem(), (await clusters.management()).cert_pem, token)
            spec = InstanceSpec(
                name=name,
                image=image,
                userdata=metad_userdata(trust, member=await membership(clusters, record, index)),
                tags=tags,
                spread_group=record.name,
                spread_index=index,
            )
            instance = (await provider.run_instances([spec]))[0]
            member = member.model_copy(update={"instance_id": instance.instance_id})
        members.append(member)
        record = record.model_copy(update={"members": [*members, *record.members[index:]]})
        await save(record)
    return record


def with_addresses(record: MetadataCluster, booted: list[Instance]) -> MetadataCluster:
    by_id = {i.instance_id: i for i in booted}
    members = [
        m.model_copy(update={"ip": by_id[m.instance_id].private_ip}) if m.instance_id in by_id else m
        for m in record.members
    ]
    return record.model_copy(update={"members": members})


async def bootstrap(
    clusters: MetadataClusters,
    record: MetadataCluster,
    deadline: float,
    save: Callable[[MetadataCluster], Awaitable[None]],
) -> MetadataCluster:
    """Member 0's issuer and every member's peer certificate and list, handed over.

    While it waits on a member's metad the cloud is asked now and then whether that member's VM
    still runs: one that stopped fails the step in seconds (:class:`VmHalted`), not at ``deadline``.
    """
    authority = await clusters.authority()
    peers = await etcd_peers_ca(clusters.store, clusters.sealer)
    urls = peer_urls(record)
    if record.bootstrap_sha256 and not record.handed_over:
        watch = clusters.vm_watch(record, record.vm_name, f"metadata VM {record.name}: issuer bootstrap")
        offer = await offer_of(record.manage_url, record.bootstrap_sha256, deadline, watch)
        if offer is not None:
            if not record.issuer_pem:
                cert = await asyncio.to_thread(authority.sign_issuer, offer.csr, record.owner, record.runtime)
                record = record.model_copy(
                    update={"issuer_pem": cert.decode(), "bootstrap_consumed": time.time()}
                )
                await save(record)  # recorded before the certificate leaves, as for a cluster of one
            peer = await asyncio.to_thread(sign_peer, peers, offer.peer_csr, record.ip, record.name)
            await push_to(
                record.manage_url,
                record.bootstrap_sha256,
                record.issuer_cert_pem,
                peer,
                urls,
                deadline,
                watch=watch,
            )
        # Its metad now waits for its etcd's quorum, answering nothing: not to be asked again.
        record = record.model_copy(update={"handed_over": time.time()})
        await save(record)
    members = list(record.members)
    for index, member in enumerate(members):
        if not member.bootstrap_sha256 or member.bootstrap_consumed:
            continue
        base = f"https://{member.ip}:9611"
        watch = clusters.vm_watch(record, member.name, f"metadata member {member.name}: peer bootstrap")
        offer = await offer_of(base, member.bootstrap_sha256, deadline, watch)
        if offer is not None:
            peer = await asyncio.to_thread(sign_peer, peers, offer.peer_csr, member.ip, record.name)
            await push_to(base, member.bootstrap_sha256, b"", peer, urls, deadline, watch=watch)
        members[index] = member.model_copy(update={"bootstrap_consumed": time.time()})
        record = record.model_copy(update={"members": members})
        await save(record)
    return record


async def wait_members_healthy(clusters: MetadataClusters, record: MetadataCluster, timeout: float) -> None:
    """Every member's metad answering its management port (it serves once its etcd has a quorum);
    a member whose VM stopped meanwhile fails the wait in seconds (:class:`VmHalted`)."""
    context = management_client_context(record.issuer_cert_pem, await clusters.management())
    deadline = time.monotonic() + timeout
    for name, vm_name, ip in [
        (record.name, record.vm_name, record.ip),
        *((m.name, m.name, m.ip) for m in record.members),
    ]:
        backoff = Backoff(0.05, 0.5)
        watch = clusters.vm_watch(record, vm_name, f"metadata member {name} at {ip}: waiting for its metad")
        async with MetadManagementClient(f"https://{ip}:9611", ssl=context) as client:
            while True:
                try:
                    await client.healthz()
                    break
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"metadata member {name} at {ip} did not become healthy") from None
                    await watch.still_running(str(exc) or type(exc).__name__)
                    await asyncio.sleep(backoff.next())


async def offer_of(
    base: str, token_sha256: str, deadline: float, watch: VmWatch | None = None
) -> issuer_exchange.Offer | None:
    """The member's CSRs once its metad waits for them; None if it already has its certificates."""
    backoff = Backoff(0.02, 0.5)
    while True:
        try:
            return await issuer_exchange.fetch_offer(base, token_sha256)
        except issuer_exchange.NotReady as exc:
            if "HTTP 409" in str(exc):
                return None  # an earlier push arrived
            if time.monotonic() > deadline:
                raise TimeoutError(f"metadata member at {base}: issuer bootstrap: {exc}") from None
            if watch is not None:
                await watch.still_running(exc)
            await asyncio.sleep(backoff.next())


async def push_to(
    base: str,
    token_sha256: str,
    cert: bytes,
    peer: bytes,
    urls: dict[str, str],
    deadline: float,
    state: str = "new",
    watch: VmWatch | None = None,
) -> None:
    backoff = Backoff(0.02, 0.5)
    while True:
        try:
            await issuer_exchange.push_certificate(
                base, token_sha256, cert, peer_cert_pem=peer, members=urls, state=state
            )
            return
        except issuer_exchange.NotReady as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"metadata member at {base}: issuer bootstrap: {exc}") from None
            if watch is not None:
                await watch.still_running(exc)
            await asyncio.sleep(backoff.next())
