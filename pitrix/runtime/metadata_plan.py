"""The making of a metadata cluster as a plan: named, journaled, resumable steps with deadlines.

    plan-vm → run-instance → wait-running → bootstrap-issuer → wait-healthy

Every step reads the metadata cluster's record from etcd, acts, and writes what it learned back
before it ends, so the record is the one account of how far the making got, and a pitrixd killed
anywhere resumes (through the journal) at the first step not done. Each step looks before it acts:
the VM has a deterministic name and is looked up by it before one is asked for, and the one-time
token's hash is recorded before any VM holds the token.

A step's own waits are bounded by what it waits for (the VM's boot, the token's expiry, metad's
health) and all of them by the step's deadline: the whole plan fits in the supervisor's
``metadata`` step (600 s), so a waiter on the making gives up with a reason before that does.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import TYPE_CHECKING

from pitrix.logs import get_logger
from pitrix.providers.base import InstanceSpec, Provider
from pitrix.runtime import issuer_exchange, metadata_members
from pitrix.runtime.booting import wait_booted
from pitrix.runtime.keys import metadata_key
from pitrix.runtime.plan import Plan, Step
from pitrix.runtime.records import DEFAULT_METADATA_IMAGE, MetadataCluster, Runtime
from pitrix.runtime.userdata import MetadTrust, metad_userdata

if TYPE_CHECKING:
    from pitrix.runtime.metadata import MetadataClusters

METADATA_IMAGE = DEFAULT_METADATA_IMAGE  # the image of a runtime that names none
# How long a metadata VM's issuer-bootstrap token is good for, from the moment it is made: the
# VM must boot and its metad offer its CSR within it, else the VM is made again with a new one.
ISSUER_TOKEN_TTL = 900.0
# Step deadlines (seconds); together 510 s, inside the supervisor's 600 s ``metadata`` step.
PLAN_VM_TIMEOUT = 30.0
RUN_INSTANCE_TIMEOUT = 120.0
WAIT_RUNNING_TIMEOUT = 180.0
BOOTSTRAP_TIMEOUT = 120.0
WAIT_HEALTHY_TIMEOUT = 60.0
PLAN_BUDGET = (
    PLAN_VM_TIMEOUT + RUN_INSTANCE_TIMEOUT + WAIT_RUNNING_TIMEOUT + BOOTSTRAP_TIMEOUT + WAIT_HEALTHY_TIMEOUT
)
STEPS = ("plan-vm", "run-instance", "wait-running", "bootstrap-issuer", "wait-healthy")


class Stranded(Exception):
    """The VM's issuer token ran out before its metad asked: only a new VM can get an issuer."""


def stranded(record: MetadataCluster) -> bool:
    """A VM waiting for an issuer its token can no longer buy."""
    return (
        bool(record.bootstrap_sha256)
        and not record.issuer_pem
        and issuer_exchange.expired(record.bootstrap_expires)
    )


def wanted_size(clusters: MetadataClusters, definition: Runtime | None) -> int:
    """Members a metadata cluster on ``definition`` has: its metadata_size where members can be
    (mutual TLS, metad reached directly); one otherwise. Made so, and grown to it."""
    if definition is None or not clusters.tls or clusters.via_ssh(definition):
        return 1
    return definition.metadata_size


class MetadataBuild:
    """The steps making ``holder``'s metadata cluster on ``runtime`` (one job of them)."""

    def __init__(
        self,
        clusters: MetadataClusters,
        holder: str,
        runtime: str,
        definition: Runtime | None,
        boot_timeout: float,
    ) -> None:
        self.clusters = clusters
        self.store = clusters.store
        self.holder = holder
        self.runtime = runtime
        self.definition = definition
        self.boot_timeout = boot_timeout  # one boot attempt's wait (wait_booted starts a failed boot again)
        self.key = metadata_key(holder, runtime)
        self.log = get_logger("pitrix.metadata", owner=holder, runtime=runtime)

    @property
    def size(self) -> int:
        return wanted_size(self.clusters, self.definition)

    @property
    def image(self) -> str:
        """The image the metadata VMs boot: the runtime's ``metadata_image``."""
        return self.definition.metadata_image if self.definition is not None else METADATA_IMAGE

    def plan(self) -> Plan:
        return (
            Plan("metadata")
            .then(Step("plan-vm", self.plan_vm, PLAN_VM_TIMEOUT))
            .then(Step("run-instance", self.run_instance, RUN_INSTANCE_TIMEOUT))
            .then(Step("wait-running", self.wait_running, WAIT_RUNNING_TIMEOUT))
            .then(Step("bootstrap-issuer", self.bootstrap_issuer, BOOTSTRAP_TIMEOUT))
            .then(Step("wait-healthy", self.wait_healthy, WAIT_HEALTHY_TIMEOUT))
        )

    # -- record ------------------------------------------------------------------------------------

    async def _load(self) -> MetadataCluster:
        kv = await self.store.get(self.key)
        if kv is None:
            raise RuntimeError(f"metadata cluster {self.holder}/{self.runtime}: its record is gone")
        return MetadataCluster.opened(kv.value, self.clusters.sealer)

    async def _save(self, record: MetadataCluster) -> None:
        await self.store.put(self.key, record.sealed(self.clusters.sealer))

    async def _provider(self) -> Provider:
        return await self.clusters.provider_for(self.runtime)

    # -- steps -------------------------------------------------------------------------------------

    async def plan_vm(self) -> str:
        """The VM's name and key pair (SSH runtimes): everything run-instance asks the cloud with."""
        record = await self._load()
        if self.clusters.via_ssh(self.definition):
            pair = await self.clusters.keypairs.get(await self._provider(), self.holder, self.runtime)
            return f"VM {record.name}, image {self.image}, key pair {pair.cloud_id}"
        return f"VM {record.name}, image {self.image}"

    async def run_instance(self) -> str:
        """The VM by its name, or a new one: its token's hash recorded before the cloud is asked."""
        record = await self._load()
        provider = await self._provider()
        found = await self.clusters.vms(provider, record)
        if found and stranded(record):
            self.log.warning("metadata VM missed its issuer bootstrap; making it again", name=record.name)
            await provider.terminate_instances([i.instance_id for i in found])
            found = []
        if found:
            instance = found[0]
            detail = f"found {instance.instance_id} ({record.name})"
        else:
            self.log.info("creating metadata cluster", name=record.name)
            record, trust = await self._new_trust(record)
            await self._save(record)  # the token's hash before any VM holds it
            key_pair = ""
            if self.clusters.via_ssh(self.definition):
                key_pair = (await self.clusters.keypairs.get(provider, self.holder, self.runtime)).cloud_id
            member = await metadata_members.membership(self.clusters, record, 0) if self.size > 1 else None
            spec = InstanceSpec(
                name=record.name,
                image=self.image,
                key_pair=key_pair,
                userdata=metad_userdata(trust, member=member),
                tags={"pitrix:owner": self.holder, "pitrix:role": "metadata"},
                spread_group=record.name,  # members of one metadata cluster belong apart
            )
            instance = (await provider.run_instances([spec]))[0]
            detail = f"made {instance.instance_id} ({record.name})"
        record = record.model_copy(update={"instance_id": instance.instance_id})
        await self._save(record)
        if self.size > 1:
            tags = {"pitrix:owner": self.holder, "pitrix:role": "metadata"}
            record = await metadata_members.run_members(
                self.clusters, provider, record, self.size, self.image, tags, ISSUER_TOKEN_TTL, self._save
            )
            detail += f" and {len(record.members)} more member(s)"
        return detail

    async def wait_running(self) -> str:
        record = await self._load()
        (instance,) = await wait_booted(await self._provider(), [record.instance_id], self.boot_timeout)
        record = record.model_copy(update={"instance_id": instance.instance_id, "ip": instance.private_ip})
        if record.members:
            ids = [m.instance_id for m in record.members]
            booted = await wait_booted(await self._provider(), ids, self.boot_timeout)
            record = metadata_members.with_addresses(record, booted)
        await self._save(record)
        await self.clusters.reach(record, self.definition)
        return f"{instance.instance_id} running at {instance.private_ip}" + "".join(
            f", {m.instance_id} at {m.ip}" for m in record.members
        )

    async def bootstrap_issuer(self) -> str:
        record = await self._load()
        if not record.bootstrap_sha256:
            if record.issuer_pem:
                return "issuer already handed over"
            return "no issuer: this metadata cluster speaks plain HTTP"
        if stranded(record):
            raise Stranded(
                f"the issuer bootstrap token of {record.name} expired unused; the VM is made again"
            )
        deadline = time.monotonic() + BOOTSTRAP_TIMEOUT
        if record.members:
            await self.clusters.management()
            record = await metadata_members.bootstrap(self.clusters, record, deadline - 5.0, self._save)
            return f"issuer signed for {record.name}; {len(record.members) + 1} members given their peers"
        record = await self.clusters.bootstrap_issuer(record, deadline)
        return f"issuer signed for {record.name} and handed over"

    async def wait_healthy(self) -> str:
        record = await self._load()
        await self.clusters.wait_healthy(record, WAIT_HEALTHY_TIMEOUT - 1.0)
        await metadata_members.wait_members_healthy(self.clusters, record, WAIT_HEALTHY_TIMEOUT - 1.0)
        # Spent: the tokens' hashes (the proofs' keys) need not be kept any longer.
        members = [m.model_copy(update={"bootstrap_sha256": ""}) for m in record.members]
        record = record.model_copy(update={"status": "ready", "bootstrap_sha256": "", "members": members})
        await self._save(record)
        self.log.info("metadata cluster ready", ip=record.ip, instance_id=record.instance_id)
        return f"metadata service at {record.ip}"

    async def _new_trust(self, record: MetadataCluster) -> tuple[MetadataCluster, MetadTrust | None]:
        """A new VM's userdata trust material (a fresh one-time token) and the record naming it."""
        if not self.clusters.tls:
            return record, None
        authority = await self.clusters.authority()
        token = secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode()).hexdigest()
        record = record.model_copy(
            update={
                "issuer_pem": "",
                "bootstrap_sha256": digest,
                "bootstrap_expires": time.time() + ISSUER_TOKEN_TTL,
                "bootstrap_consumed": 0.0,
                "handed_over": 0.0,
            }
        )
        trust = MetadTrust(authority.ca_pem(), (await self.clusters.management()).cert_pem, token)
        return record, trust
