"""What every step of one job works over: the cluster, its job, and the clients it reaches them by."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import structlog

from pitrix.logs import get_logger
from pitrix.metad.client import MetadManagementClient
from pitrix.providers.base import Provider
from pitrix.runtime.agents import AgentStatus
from pitrix.runtime.keypairs import KeyPairs, RuntimeKeyPair
from pitrix.runtime.ownership import LostOwnership
from pitrix.runtime.passphraseless import RoleKey
from pitrix.runtime.records import DEFAULT_HEARTBEAT_INTERVAL, Cluster, Job, MetadataCluster, Runtime
from pitrix.sealing import Sealer
from pitrix.ssh import SshSessions
from pitrix.store import Store
from pitrix.store.types import Compare, Op

if TYPE_CHECKING:
    from pitrix.runtime.metadata import MetadataClusters


class OperationError(Exception):
    """A step could not reach its goal; the message says which node and why."""


class RolledBack(OperationError):
    """An env rollout failed on a batch and every node it touched was given its previous values."""


@dataclass
class JobContext:
    """One job's view: built once per run of a plan and handed to each of its steps."""

    store: Store
    cluster: Cluster
    job: Job
    provider: Provider
    metadata: MetadataCluster
    metad: MetadManagementClient
    agents: AgentStatus
    sealer: Sealer  # bootstrap tokens are sealed in etcd
    keypairs: KeyPairs  # the service's own: etcd and cloud asked once per owner and runtime
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL  # the runtime's, for the agents it configures
    fleet: MetadataClusters | None = None  # every metadata cluster (delete releases its own)
    # The claim the job runs under (``Ownership.fence``): every record a step writes is guarded by
    # it, so a replica that lost the cluster to another cannot overwrite the new owner's records.
    fence: list[Compare] = field(default_factory=list)
    # The cluster's node ids as its node records said when the plan was made (``nodes.node_ids``):
    # after a scale-in of chosen nodes they are not ``<role>-1..count``. None: not read (create).
    node_ids: list[str] | None = None
    # The cluster's runtime record (zone, endpoint, settings): what AppCenter-profile metadata
    # tells instances about where they run. None: not read (tests building a context by hand).
    runtime: Runtime | None = None
    # The key pairs of the app's passphraseless roles, loaded when the job starts (passphraseless.load).
    role_keys: dict[str, RoleKey] = field(default_factory=dict)
    _key_pair: RuntimeKeyPair | None = field(default=None, init=False, repr=False)

    @property
    def cid(self) -> str:
        return self.cluster.id

    @property
    def over_ssh(self) -> bool:
        return self.cluster.channel == "ssh"

    @property
    def tls(self) -> bool:
        return bool(self.metadata.issuer_pem)

    @cached_property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        return get_logger("pitrix.steps", cluster_id=self.cluster.id, job_id=self.job.id)

    async def write(self, *ops: Op) -> None:
        """Write the cluster's records in one transaction, only while this replica owns it."""
        written = await self.store.txn(self.fence, list(ops))
        if not written.succeeded:
            raise LostOwnership(self.cid, f"write of {', '.join(op.key for op in ops)} refused")

    async def key_pair(self) -> RuntimeKeyPair:
        """pitrixd's key pair for the cluster's owner on its runtime (in etcd and in the cloud)."""
        if self._key_pair is None:
            self._key_pair = await self.keypairs.get(self.provider, self.cluster.owner, self.cluster.runtime)
        return self._key_pair

    async def ssh_sessions(self) -> SshSessions:
        """SSH sessions with the key pair, pinning the host keys the cloud shows (``host_keys``)."""
        return SshSessions((await self.key_pair()).private_key, keys=self.provider.host_keys)
