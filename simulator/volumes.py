"""The simulated cloud's volumes: each a directory the simulator owns, outside every VM.

A volume's data lives in ``<state>/volumes/<volume_id>/data``, so it outlives its VM's stop and
start and even its VM. Attaching puts a device entry in the VM's root (``<root>/dev/vdX``, a
symlink to the data directory): what a guest sees as a new disk, and what the node-side prepare
tells apart from a real block device by testing the path (a directory, not ``-b``). Detaching
removes the entry; deleting removes the data.
"""

from __future__ import annotations

import shutil
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.errors import BAD_STATUS, NOT_FOUND, ApiError
from simulator.jobs import resource_id
from simulator.listing import newest_matching
from simulator.vm import now_iso

STATUSES = frozenset({"pending", "available", "in-use", "suspended", "deleted", "ceased"})
DEVICE_NAMES = tuple(f"vd{letter}" for letter in string.ascii_lowercase[1:])  # vdb..vdz; vda is the root


@dataclass
class SimVolume:
    volume_id: str
    name: str
    size: int  # GiB, as asked; a directory has no size of its own
    home: Path  # <state>/volumes/<volume_id>
    status: str = "pending"
    transition_status: str = "creating"
    instance_id: str = ""
    device: str = ""  # /dev/vdX inside the VM while attached
    create_time: str = field(default_factory=now_iso)
    status_time: str = field(default_factory=now_iso)
    delete_time: str = ""

    @property
    def data(self) -> Path:
        return self.home / "data"

    def set_status(self, status: str, transition: str = "") -> None:
        self.status = status
        self.transition_status = transition
        self.status_time = now_iso()

    def describe(self, instance_name: str) -> dict[str, Any]:
        """A ``volume_set`` entry, shaped as QingCloud's DescribeVolumes answers."""
        item: dict[str, Any] = {
            "volume_id": self.volume_id,
            "volume_name": self.name,
            "description": "",
            "size": self.size,
            "volume_type": 0,
            "status": self.status,
            "transition_status": self.transition_status,
            "create_time": self.create_time,
            "status_time": self.status_time,
            "instance": {},
        }
        if self.instance_id:
            item["instance"] = {
                "instance_id": self.instance_id,
                "instance_name": instance_name,
                "device": self.device,
            }
        return item

    def ledger_entry(self) -> dict[str, Any]:
        return {
            "volume_id": self.volume_id,
            "name": self.name,
            "size": self.size,
            "status": self.status,
            "instance_id": self.instance_id or None,
            "path": str(self.data),
            "created": self.create_time,
            "deleted": self.delete_time or None,
        }


def make_volume_dir(volume: SimVolume) -> None:
    volume.data.mkdir(parents=True, exist_ok=True)


def remove_volume_dirs(homes: list[Path]) -> None:
    for home in homes:
        shutil.rmtree(home, ignore_errors=True)


def link_device(root: Path, device: str, target: Path) -> None:
    """The device entry ``<root><device>`` pointing at the volume's data."""
    entry = root / device.lstrip("/")
    entry.parent.mkdir(parents=True, exist_ok=True)
    if entry.is_symlink():
        entry.unlink()
    entry.symlink_to(target)


def unlink_device(root: Path, device: str) -> None:
    entry = root / device.lstrip("/")
    if entry.is_symlink():
        entry.unlink()
    (root / "sys" / "block" / Path(device).name / "size").unlink(missing_ok=True)


SECTOR = 512


def write_device_size(root: Path, device: str, size: int) -> None:
    """The guest's view of an attached volume's size, where Linux shows it: ``/sys/block/<dev>/size``
    in 512-byte sectors (a directory has no size of its own, so the guest reads it here)."""
    entry = root / "sys" / "block" / Path(device).name / "size"
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(f"{size * 1024**3 // SECTOR}\n")


class VolumeBook:
    """Every volume ever created (deleted ones too: the ledger), by id."""

    def __init__(self, volumes_dir: Path) -> None:
        self.dir = volumes_dir
        self._volumes: dict[str, SimVolume] = {}

    def new(self, name: str, size: int) -> SimVolume:
        vid = resource_id("vol")
        while vid in self._volumes:
            vid = resource_id("vol")
        volume = SimVolume(volume_id=vid, name=name, size=size, home=self.dir / vid)
        self._volumes[vid] = volume
        return volume

    def existing(self, volume_ids: list[str]) -> list[SimVolume]:
        """The volumes, none deleted (2100 names the first unknown one)."""
        found = []
        for vid in volume_ids:
            volume = self._volumes.get(vid)
            if volume is None or volume.status in ("deleted", "ceased"):
                raise ApiError(NOT_FOUND, f"ResourceNotFound, resource [{vid}] not found")
            found.append(volume)
        return found

    def claim(self, volume_ids: list[str], status: str, transition: str) -> list[SimVolume]:
        """The volumes, all in ``status`` and in no transition, now marked ``transition``."""
        volumes = self.existing(volume_ids)
        for volume in volumes:
            if volume.status != status or volume.transition_status:
                raise ApiError(
                    BAD_STATUS,
                    f"ResourceStatusError, volume [{volume.volume_id}] is [{volume.status}"
                    + (f"/{volume.transition_status}" if volume.transition_status else "")
                    + f"], not {status}",
                )
        for volume in volumes:
            volume.transition_status = transition
        return volumes

    def attached_to(self, instance_id: str) -> list[SimVolume]:
        return [v for v in self._volumes.values() if v.instance_id == instance_id and v.status == "in-use"]

    def free_devices(self, instance_id: str, count: int) -> list[str]:
        """``count`` device names the instance does not use yet (2500 when it has too few left)."""
        taken = {v.device for v in self._volumes.values() if v.instance_id == instance_id}
        free = [f"/dev/{name}" for name in DEVICE_NAMES if f"/dev/{name}" not in taken]
        if len(free) < count:
            raise ApiError(
                BAD_STATUS, f"ResourceStatusError, instance [{instance_id}] has {len(free)} free device names"
            )
        return free[:count]

    def all(self) -> list[SimVolume]:
        return list(self._volumes.values())

    def describe(
        self, *, volume_ids: list[str], statuses: list[str], search_word: str, instance_id: str
    ) -> list[SimVolume]:
        """Matching volumes, newest first (deleted ones only when asked for by status)."""
        found = newest_matching(
            self._volumes.values(),
            ids=volume_ids,
            statuses=statuses,
            word=search_word,
            fields=lambda v: (v.volume_id, v.name, v.status),
        )
        return [v for v in found if not instance_id or v.instance_id == instance_id]

    def ledger(self) -> list[dict[str, Any]]:
        return [v.ledger_entry() for v in self._volumes.values()]
