"""EBS on the EC2 face: volumes and snapshots are the fleet's, named the way EC2 names them.

A volume attached here is asked for under an EC2 device name (``/dev/sdf``); the fleet links it
into the VM as ``/dev/vdX``, and this module adds what a Nitro guest sees besides: the volume under
``/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol...`` (where the AWS provider looks first)
with its size beside it in ``/sys/block/<that name>`` (a link to the fleet's entry, so a later
resize shows through it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.ec2_wire import Ec2Error
from simulator.snapshots import SimSnapshot
from simulator.vm import now_iso
from simulator.volumes import SimVolume, link_device

if TYPE_CHECKING:
    from simulator.ec2_api import Ec2Api

DEVICE = re.compile(r"^/dev/(sd|xvd)[f-p]$")
VOLUME_TYPES = frozenset({"gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"})
MAX_SIZE = 16384  # GiB, gp2/gp3


def nvme_path(volume_id: str) -> str:
    return f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"


@dataclass
class VolumeExtras:
    volume_type: str = "gp3"
    snapshot_id: str = ""
    device: str = ""  # the EC2 device name while attached through this face
    attach_time: str = ""
    modifications: list[dict[str, Any]] = field(default_factory=list)


def _link_nitro(root: Path, volume: SimVolume, fleet_device: str) -> None:
    """The Nitro names of an attached volume, beside the fleet's ``/dev/vdX``."""
    link_device(root, nvme_path(volume.volume_id), volume.data)
    entry = root / "sys" / "block" / Path(nvme_path(volume.volume_id)).name
    entry.parent.mkdir(parents=True, exist_ok=True)
    if entry.is_symlink():
        entry.unlink()
    entry.symlink_to(Path(fleet_device).name)  # sys/block/vdX, which the fleet keeps sized


def _listed(snapshot: SimSnapshot) -> bool:
    """EC2 lists no snapshot once its deletion was accepted (a second DeleteSnapshot is NotFound)."""
    return snapshot.status not in ("deleted", "ceased") and snapshot.transition_status != "deleting"


def _unlink_nitro(root: Path, volume_id: str) -> None:
    for entry in (
        root / nvme_path(volume_id).lstrip("/"),
        root / "sys" / "block" / Path(nvme_path(volume_id)).name,
    ):
        if entry.is_symlink():
            entry.unlink()


class Ec2Volumes:
    def __init__(self, api: Ec2Api) -> None:
        self.api = api
        self.fleet = api.fleet
        self._volumes: dict[str, VolumeExtras] = {}

    def actions(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]]:
        return {
            "CreateVolume": self.create_volume,
            "DescribeVolumes": self.describe_volumes,
            "AttachVolume": self.attach_volume,
            "DetachVolume": self.detach_volume,
            "DeleteVolume": self.delete_volume,
            "ModifyVolume": self.modify_volume,
            "DescribeVolumesModifications": self.describe_volumes_modifications,
            "CreateSnapshot": self.create_snapshot,
            "DescribeSnapshots": self.describe_snapshots,
            "DeleteSnapshot": self.delete_snapshot,
        }

    # -- lookups -----------------------------------------------------------------------------------

    def knows(self, resource_id: str) -> bool:
        volumes = {v.volume_id: v for v in self.fleet.volumes.all() if v.status != "deleted"}
        snapshots = {s.snapshot_id: s for s in self.fleet.snapshots.all() if s.status != "deleted"}
        return resource_id in volumes or resource_id in snapshots

    def _volume(self, volume_id: str) -> SimVolume:
        for volume in self.fleet.volumes.all():
            if volume.volume_id == volume_id and volume.status not in ("deleted", "ceased"):
                return volume
        raise Ec2Error("InvalidVolume.NotFound", f"The volume '{volume_id}' does not exist.")

    def _snapshot(self, snapshot_id: str) -> SimSnapshot:
        for snapshot in self.fleet.snapshots.all():
            if snapshot.snapshot_id == snapshot_id and _listed(snapshot):
                return snapshot
        raise Ec2Error("InvalidSnapshot.NotFound", f"The snapshot '{snapshot_id}' does not exist.")

    def _extras(self, volume_id: str) -> VolumeExtras:
        return self._volumes.setdefault(volume_id, VolumeExtras())

    @staticmethod
    def _state(volume: SimVolume) -> str:
        if volume.transition_status == "deleting":
            return "deleting"
        if volume.status == "pending":
            return "creating"
        if volume.status == "in-use" or volume.transition_status == "attaching":
            return "in-use"
        return "available" if volume.status == "available" else str(volume.status)

    def _attachment_state(self, volume: SimVolume) -> str:
        if volume.transition_status == "attaching":
            return "attaching"
        if volume.transition_status == "detaching":
            return "detaching"
        return "attached" if volume.status == "in-use" and volume.instance_id else ""

    def _device(self, volume: SimVolume) -> str:
        return self._extras(volume.volume_id).device or volume.device

    def block_devices(self, instance_id: str) -> list[dict[str, Any]]:
        """An instance's ``BlockDeviceMappings``: its attached volumes by EC2 device name."""
        found = []
        for volume in self.fleet.volumes.all():
            state = self._attachment_state(volume)
            if volume.instance_id == instance_id and state:
                ebs = {
                    "VolumeId": volume.volume_id,
                    "Status": state,
                    "AttachTime": self._extras(volume.volume_id).attach_time or volume.status_time,
                    "DeleteOnTermination": False,
                }
                found.append({"DeviceName": self._device(volume), "Ebs": ebs})
        return found

    def forget_instance(self, instance_id: str) -> None:
        """A terminated instance's volumes are detached (the fleet keeps their data, as EC2 does)."""
        for volume in self.fleet.volumes.all():
            if volume.instance_id == instance_id:
                self._extras(volume.volume_id).device = ""

    # -- volumes -----------------------------------------------------------------------------------

    def volume_item(self, volume: SimVolume) -> dict[str, Any]:
        extras = self._extras(volume.volume_id)
        attachments = []
        state = self._attachment_state(volume)
        if state:
            attachments.append(
                {
                    "VolumeId": volume.volume_id,
                    "InstanceId": volume.instance_id,
                    "Device": self._device(volume),
                    "State": state,
                    "AttachTime": extras.attach_time or volume.status_time,
                    "DeleteOnTermination": False,
                }
            )
        return {
            "VolumeId": volume.volume_id,
            "Size": volume.size,
            "SnapshotId": extras.snapshot_id,
            "AvailabilityZone": self.api.availability_zone,
            "State": self._state(volume),
            "CreateTime": volume.create_time,
            "VolumeType": extras.volume_type,
            "Iops": 3000,
            "Throughput": 125,
            "Encrypted": False,
            "MultiAttachEnabled": False,
            "Attachments": attachments,
            "Tags": self.api.tag_list(volume.volume_id),
        }

    def create_volume(self, params: dict[str, Any]) -> dict[str, Any]:
        zone = str(params.get("AvailabilityZone") or "")
        if not zone:
            raise Ec2Error("MissingParameter", "The request must contain the parameter AvailabilityZone")
        if zone != self.api.availability_zone:
            raise Ec2Error("InvalidZone.NotFound", f"The zone '{zone}' does not exist.")
        volume_type = str(params.get("VolumeType") or "gp2")
        if volume_type not in VOLUME_TYPES:
            raise Ec2Error(
                "InvalidParameterValue", f"Value ({volume_type}) for parameter volumeType is invalid."
            )
        snapshot_id = str(params.get("SnapshotId") or "")
        size = params.get("Size")
        if size is None and not snapshot_id:
            raise Ec2Error("MissingParameter", "The request must contain the parameter size or snapshotId")
        if size is not None and not 1 <= int(size) <= MAX_SIZE:
            raise Ec2Error("InvalidParameterValue", f"Volume of {size}GiB is outside 1-{MAX_SIZE} GiB.")
        tags = self.api.launch_tags(params.get("TagSpecifications") or [], "volume")
        name = tags.get("Name", "")
        if snapshot_id:
            snapshot = self._snapshot(snapshot_id)
            if size is not None and int(size) < snapshot.size:
                raise Ec2Error(
                    "InvalidParameterValue",
                    f"Volume of {size}GiB is too small; minimum is {snapshot.size}GiB (the snapshot's).",
                )
            if snapshot.status != "available" or snapshot.transition_status:
                raise Ec2Error("IncorrectState", f"Snapshot '{snapshot_id}' is not completed.")
            volume_id, _ = self.fleet.create_volume_from_snapshot(snapshot_id, name)
            volume = self._volume(volume_id)
            volume.size = int(size) if size is not None else snapshot.size
        else:
            [volume_id], _ = self.fleet.create_volumes(name, int(size or 0), 1)
            volume = self._volume(volume_id)
        self._volumes[volume_id] = VolumeExtras(volume_type, snapshot_id)
        self.api.tags[volume_id] = tags
        item = self.volume_item(volume)
        item.pop("Attachments")
        return item

    def describe_volumes(self, params: dict[str, Any]) -> dict[str, Any]:
        ids = [str(i) for i in params.get("VolumeIds") or []]
        volumes = (
            [self._volume(i) for i in dict.fromkeys(ids)]
            if ids
            else [v for v in self.fleet.volumes.all() if v.status not in ("deleted", "ceased")]
        )

        def fields(volume: SimVolume) -> Callable[[str], list[str] | None]:
            def value(name: str) -> list[str] | None:
                if name == "volume-id":
                    return [volume.volume_id]
                if name == "status":
                    return [self._state(volume)]
                if name == "attachment.instance-id":
                    return [volume.instance_id] if volume.instance_id else []
                if name == "availability-zone":
                    return [self.api.availability_zone]
                return self.api.tag_field(volume.volume_id, name)

            return value

        filters = self.api.check_filters(
            params.get("Filters") or [],
            frozenset({"volume-id", "status", "attachment.instance-id", "availability-zone"}),
        )
        chosen = [v for v in volumes if self.api.matches(filters, fields(v))]
        page, token = self.api.page(chosen, params, limit=500)
        result: dict[str, Any] = {"Volumes": [self.volume_item(v) for v in page]}
        if token:
            result["NextToken"] = token
        return result

    async def attach_volume(self, params: dict[str, Any]) -> dict[str, Any]:
        for name in ("VolumeId", "InstanceId", "Device"):
            if not params.get(name):
                raise Ec2Error("MissingParameter", f"The request must contain the parameter {name}")
        volume = self._volume(str(params["VolumeId"]))
        vm = self.api.vm(str(params["InstanceId"]), live=True)
        device = str(params["Device"])
        if not DEVICE.match(device):
            raise Ec2Error("InvalidParameterValue", f"Value ({device}) for parameter device is invalid.")
        taken = {m["DeviceName"] for m in self.block_devices(vm.instance_id)}
        if device in taken:
            raise Ec2Error("InvalidParameterValue", f"Attachment point {device} is already in use")
        if volume.status != "available" or volume.transition_status:
            raise Ec2Error("VolumeInUse", f"{volume.volume_id} is already attached to an instance")
        self.fleet.attach_volumes([volume.volume_id], vm.instance_id)
        extras = self._extras(volume.volume_id)
        extras.device, extras.attach_time = device, now_iso()
        await asyncio.to_thread(_link_nitro, vm.root, volume, volume.device)
        return {
            "VolumeId": volume.volume_id,
            "InstanceId": vm.instance_id,
            "Device": device,
            "State": "attaching",
            "AttachTime": extras.attach_time,
        }

    async def detach_volume(self, params: dict[str, Any]) -> dict[str, Any]:
        volume = self._volume(str(params.get("VolumeId") or ""))
        instance_id = str(params.get("InstanceId") or volume.instance_id)
        if not volume.instance_id or volume.instance_id != instance_id or volume.status != "in-use":
            raise Ec2Error(
                "IncorrectState", f"Volume '{volume.volume_id}' is not attached to instance '{instance_id}'."
            )
        if volume.transition_status:
            raise Ec2Error("IncorrectState", f"Volume '{volume.volume_id}' is {volume.transition_status}.")
        vm = self.api.vm(instance_id)
        extras = self._extras(volume.volume_id)
        answer = {
            "VolumeId": volume.volume_id,
            "InstanceId": instance_id,
            "Device": self._device(volume),
            "State": "detaching",
            "AttachTime": extras.attach_time or volume.status_time,
        }
        self.fleet.detach_volumes([volume.volume_id], instance_id)
        await asyncio.to_thread(_unlink_nitro, vm.root, volume.volume_id)
        extras.device = ""
        return answer

    def delete_volume(self, params: dict[str, Any]) -> dict[str, Any]:
        volume = self._volume(str(params.get("VolumeId") or ""))
        if volume.instance_id or volume.status == "in-use":
            raise Ec2Error(
                "VolumeInUse", f"Volume {volume.volume_id} is currently attached to {volume.instance_id}"
            )
        if volume.transition_status:
            raise Ec2Error("IncorrectState", f"Volume '{volume.volume_id}' is {volume.transition_status}.")
        self.fleet.delete_volumes([volume.volume_id])
        return {}

    def modify_volume(self, params: dict[str, Any]) -> dict[str, Any]:
        """A larger size, online as EBS does it (the guest sees it at once)."""
        volume = self._volume(str(params.get("VolumeId") or ""))
        size = params.get("Size")
        if size is None:
            raise Ec2Error("MissingParameter", "The request must contain the parameter Size")
        if int(size) <= volume.size:
            raise Ec2Error(
                "InvalidParameterValue",
                f"New size {size} GiB must be larger than the volume's {volume.size} GiB.",
            )
        if int(size) > MAX_SIZE:
            raise Ec2Error("InvalidParameterValue", f"Volume of {size}GiB is larger than {MAX_SIZE} GiB.")
        extras = self._extras(volume.volume_id)
        if any(self._modification_state(volume, m) == "modifying" for m in extras.modifications):
            raise Ec2Error(
                "IncorrectModificationState", f"Volume {volume.volume_id} is already being modified."
            )
        modification = {
            "VolumeId": volume.volume_id,
            "TargetSize": int(size),
            "OriginalSize": volume.size,
            "TargetVolumeType": extras.volume_type,
            "OriginalVolumeType": extras.volume_type,
            "StartTime": now_iso(),
            "Progress": 0,
        }
        self.fleet.resize_volumes([volume.volume_id], int(size), online=True)
        extras.modifications.append(modification)
        return {"VolumeModification": {**modification, "ModificationState": "modifying"}}

    @staticmethod
    def _modification_state(volume: SimVolume, modification: dict[str, Any]) -> str:
        done = volume.size == modification["TargetSize"] and volume.transition_status != "resizing"
        return "completed" if done else "modifying"

    def describe_volumes_modifications(self, params: dict[str, Any]) -> dict[str, Any]:
        found = []
        for volume_id in [str(i) for i in params.get("VolumeIds") or []]:
            volume = self._volume(volume_id)
            for modification in self._extras(volume_id).modifications:
                state = self._modification_state(volume, modification)
                progress = 100 if state == "completed" else 0
                found.append({**modification, "ModificationState": state, "Progress": progress})
        return {"VolumesModifications": found}

    # -- snapshots ---------------------------------------------------------------------------------

    def snapshot_item(self, snapshot: SimSnapshot, description: str = "") -> dict[str, Any]:
        state = (
            "completed" if snapshot.status == "available" and not snapshot.transition_status else "pending"
        )
        return {
            "SnapshotId": snapshot.snapshot_id,
            "VolumeId": snapshot.volume_id,
            "State": state,
            "StartTime": snapshot.create_time,
            "Progress": "100%" if state == "completed" else "0%",
            "OwnerId": "123456789012",
            "Description": description or snapshot.name,
            "VolumeSize": snapshot.size,
            "Encrypted": False,
            "StorageTier": "standard",
            "Tags": self.api.tag_list(snapshot.snapshot_id),
        }

    def create_snapshot(self, params: dict[str, Any]) -> dict[str, Any]:
        volume = self._volume(str(params.get("VolumeId") or ""))
        if volume.status == "pending":
            raise Ec2Error("IncorrectState", f"Volume '{volume.volume_id}' is still being created.")
        tags = self.api.launch_tags(params.get("TagSpecifications") or [], "snapshot")
        description = str(params.get("Description") or "")
        [snapshot_id], _ = self.fleet.create_snapshots([volume.volume_id], tags.get("Name", description))
        self.api.tags[snapshot_id] = tags
        snapshot = self._snapshot(snapshot_id)
        return self.snapshot_item(snapshot, description)

    def describe_snapshots(self, params: dict[str, Any]) -> dict[str, Any]:
        owners = [str(o) for o in params.get("OwnerIds") or []]
        if any(o not in ("self", "123456789012") for o in owners):
            return {"Snapshots": []}  # nobody else shares snapshots with this account
        ids = [str(i) for i in params.get("SnapshotIds") or []]
        snapshots = (
            [self._snapshot(i) for i in dict.fromkeys(ids)]
            if ids
            else [s for s in self.fleet.snapshots.all() if _listed(s)]
        )

        def fields(snapshot: SimSnapshot) -> Callable[[str], list[str] | None]:
            def value(name: str) -> list[str] | None:
                if name == "snapshot-id":
                    return [snapshot.snapshot_id]
                if name == "volume-id":
                    return [snapshot.volume_id]
                if name == "status":
                    return [self.snapshot_item(snapshot)["State"]]
                return self.api.tag_field(snapshot.snapshot_id, name)

            return value

        filters = self.api.check_filters(
            params.get("Filters") or [], frozenset({"snapshot-id", "volume-id", "status"})
        )
        chosen = [s for s in snapshots if self.api.matches(filters, fields(s))]
        page, token = self.api.page(chosen, params)
        result: dict[str, Any] = {"Snapshots": [self.snapshot_item(s) for s in page]}
        if token:
            result["NextToken"] = token
        return result

    def delete_snapshot(self, params: dict[str, Any]) -> dict[str, Any]:
        snapshot = self._snapshot(str(params.get("SnapshotId") or ""))
        if snapshot.transition_status:
            raise Ec2Error(
                "IncorrectState", f"Snapshot '{snapshot.snapshot_id}' is {snapshot.transition_status}."
            )
        self.fleet.delete_snapshots([snapshot.snapshot_id])
        return {}
