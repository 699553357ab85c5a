"""The provider interface: what the runtime needs from any cloud.

Providers know nothing of clusters' lifecycles; they create, find and remove instances. Every
instance the runtime asks for has a deterministic ``name`` (cluster id + node id) and tags, so a
step can always look an instance up before creating it and a crash never creates one twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pitrix.providers.errors import Failure, ProviderError

__all__ = [
    "Failure",
    "Instance",
    "InstanceSpec",
    "InstanceStatus",
    "Provider",
    "ProviderError",
    "Snapshot",
    "Volume",
    "VolumeSpec",
    "VolumeStatus",
]

VolumeStatus = Literal["pending", "available", "in-use", "deleted", "unknown"]
InstanceStatus = Literal["pending", "running", "stopped", "suspended", "terminated", "ceased", "unknown"]


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    """One instance to create."""

    name: str  # deterministic: <cluster_id>-<node_id>
    image: str
    cpu: int = 1
    memory: int = 1024  # MiB
    userdata: str = ""  # a shell script; the provider encodes it as its cloud wants
    key_pair: str = ""
    network: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    # A provider's instance type (QingCloud instance_type, EC2 type, Nova flavor name); empty: the
    # provider picks one fitting cpu and memory.
    instance_type: str = ""
    # Which of a group's members this is, for spreading: instances with the same ``spread_group``
    # and different ``spread_index`` belong apart (another zone, host or placement group) where the
    # provider can say so; a provider with no such notion ignores both.
    spread_group: str = ""
    spread_index: int = 0


@dataclass(frozen=True, slots=True)
class Instance:
    instance_id: str
    name: str
    status: InstanceStatus
    private_ip: str = ""
    ssh_port: int = 22
    tags: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """One block volume to create."""

    name: str  # deterministic: <cluster_id>-<node_id>-vol
    size: int  # GiB
    tags: Mapping[str, str] = field(default_factory=dict)
    # The instance it is made for: a cloud that keeps volumes per zone (EBS) makes it in that
    # instance's zone, since a volume attaches only within its own.
    instance_id: str = ""
    # backup: the snapshot the volume starts as a copy of ("" for a blank one).
    snapshot_id: str = ""


@dataclass(frozen=True, slots=True)
class Volume:
    volume_id: str
    name: str
    size: int  # GiB
    status: VolumeStatus
    instance_id: str = ""  # the instance it is attached to ("" while detached)
    # Where the guest may find it, most likely first: the cloud's device name is a hint that
    # some guests rename (Xen's xvd*, Nitro's NVMe), so a provider lists every path it knows of.
    device_paths: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


SnapshotStatus = Literal["pending", "available", "deleted", "error", "unknown"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A point-in-time copy of one volume (backups); a volume can be made from it."""

    snapshot_id: str
    name: str  # deterministic: <backup_id>-<node_id>, looked up before one is taken
    volume_id: str  # the volume it was taken of
    size: int  # GiB of that volume
    status: SnapshotStatus
    created: str = ""  # the cloud's own time text
    tags: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """An async cloud client, constructed from a runtime definition (``from_runtime``)."""

    name: str

    async def run_instances(self, specs: list[InstanceSpec]) -> list[Instance]:
        """Create the instances (not waiting for them to run)."""
        ...

    async def describe_instances(
        self, *, instance_ids: list[str] | None = None, name_prefix: str | None = None
    ) -> list[Instance]:
        """Instances that exist (terminated ones excluded), by id or by name prefix."""
        ...

    async def terminate_instances(self, instance_ids: list[str]) -> None: ...

    async def start_instances(self, instance_ids: list[str]) -> None: ...

    async def stop_instances(self, instance_ids: list[str]) -> None: ...

    async def wait_running(self, instance_ids: list[str], timeout: float) -> list[Instance]:
        """Until every instance runs (error if one fails or the timeout passes)."""
        ...

    async def host_keys(self, instance: Instance) -> list[str]:
        """The instance's SSH host public keys (``"ssh-ed25519 AAAA..."`` lines) as the cloud shows
        them now: from its description where the cloud describes them, else from the console where
        cloud-init prints them at first boot. Empty while the cloud shows none yet (the caller asks
        again until its deadline); never read from the instance itself over the network."""
        ...

    async def import_key_pair(self, name: str, public_key: str) -> str:
        """The cloud's key pair ``name`` holding ``public_key`` (an OpenSSH line): looked up by name
        first, imported only if absent. Returns what an ``InstanceSpec.key_pair`` names it by."""
        ...

    # -- volumes: every call below is safe to repeat (the runtime re-runs steps after a crash) ----

    async def create_volume(self, spec: VolumeSpec) -> Volume:
        """Create one volume and wait until it can be attached (``available``). Not a lookup:
        the caller looks the deterministic name up first (``describe_volumes``)."""
        ...

    async def describe_volumes(
        self, *, volume_ids: list[str] | None = None, name_prefix: str | None = None
    ) -> list[Volume]:
        """Volumes that exist (deleted ones excluded), by id or by name prefix."""
        ...

    async def attach_volume(self, volume_id: str, instance_id: str) -> Volume:
        """Attach and wait until attached; one already attached to this instance is left as it is."""
        ...

    async def detach_volume(self, volume_id: str) -> None:
        """Detach and wait; a detached or deleted volume is left as it is."""
        ...

    async def delete_volumes(self, volume_ids: list[str]) -> None:
        """Delete (detaching first where still attached) and wait; ids already gone are skipped."""
        ...

    # -- backup: snapshots, each call safe to repeat ------------------------------------------------

    async def create_snapshot(self, volume_id: str, name: str, tags: Mapping[str, str]) -> Snapshot:
        """Snapshot the volume and wait until the snapshot can be used (``available``). Not a
        lookup: the caller looks the deterministic name up first (``describe_snapshots``)."""
        ...

    async def describe_snapshots(
        self, *, snapshot_ids: list[str] | None = None, name_prefix: str | None = None
    ) -> list[Snapshot]:
        """Snapshots that exist (deleted ones excluded), by id or by name prefix."""
        ...

    async def delete_snapshots(self, snapshot_ids: list[str]) -> None:
        """Delete and wait; ids already gone are skipped."""
        ...

    async def close(self) -> None: ...

    # -- resize: both calls are safe to repeat (a resize to the size it has changes nothing) -----

    # Whether resize_instance works on a running instance; if not, the runtime stops it first.
    online_resize: bool
    # Whether grow_volume works on a volume attached to a running instance (the guest then sees
    # the new size without a reboot); if not, the runtime stops the instance first.
    online_volume_growth: bool

    async def resize_instance(
        self, instance_id: str, *, cpu: int, memory: int, instance_type: str = ""
    ) -> None:
        """Give the instance ``cpu``/``memory`` (MiB), or ``instance_type`` where given (the
        provider's own name for a size), and wait until done. Not a start: a stopped instance
        stays stopped."""
        ...

    async def grow_volume(self, volume_id: str, size: int) -> Volume:
        """Grow the volume to ``size`` GiB and wait until the cloud says it has it; one already that
        size is left as it is. A smaller size goes to the cloud, which refuses it."""
        ...


def attachable(cloud: str, volume: Volume | None, volume_id: str, instance_id: str, missing: str) -> Volume:
    """The volume an attach may go on with: it exists, and no other instance holds it (one already
    on ``instance_id`` is fine: an attach repeated after a crash finds its own work done).
    ``missing`` is the cloud's own code for an unknown volume."""
    if volume is None:
        raise ProviderError(f"{cloud}: volume {volume_id} not found", code=missing)
    if volume.instance_id and volume.instance_id != instance_id:
        raise ProviderError(
            f"{cloud}: volume {volume_id} is attached to {volume.instance_id}, not {instance_id}",
            code="conflict",
        )
    return volume
